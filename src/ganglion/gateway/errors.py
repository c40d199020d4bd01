"""Turning :mod:`ganglion.errors` into HTTP answers: ``{"error": "one line"}`` and a status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ganglion import errors

STATUS_CODES: dict[type[errors.GanglionError], int] = {
    errors.UnknownNeuron: 404,
    errors.DuplicateNeuron: 409,
    errors.FleetError: 422,
    errors.ConfigError: 422,
    errors.NeuronUnreachable: 502,
    errors.NotAnLLMServer: 502,
    errors.NeuronError: 502,
    errors.StoreError: 503,
}


def status_for(error: errors.GanglionError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_CODES:
            return STATUS_CODES[kind]
    return 500


async def _handle(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, errors.GanglionError)
    return JSONResponse({"error": str(error)}, status_code=status_for(error))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.GanglionError, _handle)
