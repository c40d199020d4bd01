"""Turning :mod:`ganglion.errors` into HTTP answers: ``{"error": "one line"}`` and a status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ganglion import errors

STATUS_CODES: dict[type[errors.GanglionError], int] = {
    errors.UnknownNeuron: 404,
    errors.UnknownRun: 404,
    errors.DuplicateNeuron: 409,
    errors.FleetError: 422,
    errors.ConfigError: 422,
    errors.NeuronUnreachable: 502,
    errors.NotAnLLMServer: 502,
    errors.NeuronError: 502,
    errors.StoreError: 503,
    errors.KeyRequired: 401,
    errors.AdminRequired: 403,
    errors.UnknownApiKey: 404,
}


def status_for(error: errors.GanglionError) -> int:
    if isinstance(error, errors.DispatchError):
        return error.status
    for kind in type(error).__mro__:
        if kind in STATUS_CODES:
            return STATUS_CODES[kind]
    return 500


async def _handle(request: Request, error: Exception) -> JSONResponse:
    """One line in the caller's dialect: OpenAI's ``{"error": {"message": ...}}`` under
    ``/v1``, ``{"error": "..."}`` (Ollama's shape) everywhere else."""
    assert isinstance(error, errors.GanglionError)
    status = status_for(error)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ganglion"'
    retry = getattr(error, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    body: dict[str, object] = {"error": str(error)}
    if request.url.path.startswith("/v1/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": str(error), "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.GanglionError, _handle)
