"""Every error the gateway answers, one line in the caller's dialect: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` under ``/v1``, ``{"error": "..."}``
(Ollama's shape, and the fleet API's) everywhere else.

Three kinds of error reach here:

- ganglion's own (:mod:`ganglion.errors`), each with its status below;
- a request FastAPI could not read into the endpoint's model: **400** for a body that is
  not JSON, **422** for JSON of the wrong shape, naming each field that is wrong;
- HTTP errors from the framework and its middleware: 404 (no such endpoint), 405, and
  413 (:mod:`ganglion.gateway.bodies`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ganglion import errors
from ganglion.errors import phrase

STATUS_CODES: dict[type[errors.GanglionError], int] = {
    errors.UnknownNeuron: 404,
    errors.UnknownRun: 404,
    errors.DuplicateNeuron: 409,
    errors.FleetError: 422,
    errors.ConfigError: 422,
    errors.NeuronUnreachable: 422,  # raised by adding a neuron: the URL given is the mistake
    errors.NotAnLLMServer: 422,
    errors.NeuronError: 502,
    errors.StoreError: 503,
    errors.KeyRequired: 401,
    errors.AdminRequired: 403,
    errors.UnknownApiKey: 404,
}
#: Tags of a body taken in several forms (``POST /fleet/neurons``: one object, or a list of
#: them). They name the form that was tried, not a field, so a field's path leaves them out.
OBJECT_FORM, LIST_FORM = "(object)", "(list)"
FORM_TAGS = frozenset({OBJECT_FORM, LIST_FORM})
SHOWN_PROBLEMS = 3  # a 422 names this many wrong fields, then counts the rest
JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def status_for(error: errors.GanglionError) -> int:
    if isinstance(error, errors.DispatchError):
        return error.status
    for kind in type(error).__mro__:
        if kind in STATUS_CODES:
            return STATUS_CODES[kind]
    return 500


def answer(
    request: Request,
    status: int,
    message: str,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error ``message`` with ``status``, shaped for the dialect of ``request``'s path."""
    body: dict[str, object] = {"error": message}
    if request.url.path.startswith("/v1/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _ganglion(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, errors.GanglionError)
    return for_error(request, error)


def for_error(request: Request, error: errors.GanglionError) -> JSONResponse:
    """The answer to ganglion's own ``error``: its status, one line, and the headers it
    calls for (``WWW-Authenticate`` on 401, ``Retry-After`` when busy)."""
    status = status_for(error)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ganglion"'
    retry = getattr(error, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    return answer(request, status, str(error), headers=headers)


async def _invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_without_form(problem) for problem in error.errors()]
    if problems and problems[0]["type"] == "json_invalid":
        cause = problems[0].get("ctx", {}).get("error", "malformed")
        where = problems[0]["loc"][-1]
        message = f"the request body is not valid JSON ({cause} at character {where})"
        return answer(request, 400, message + ": send one JSON object")
    return answer(request, 422, describe(problems), param=_field(problems))


async def _http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    message = str(error.detail)
    if error.status_code == 404 and message == "Not Found":
        message = f"no endpoint {request.url.path}: the gateway's API is listed at /docs"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}: see /docs"
    return answer(request, error.status_code, message, headers=error.headers)


def _without_form(problem: Any) -> Any:
    """A problem's place without the tag of the body's form (:data:`FORM_TAGS`)."""
    return {**problem, "loc": tuple(part for part in problem["loc"] if part not in FORM_TAGS)}


def describe(problems: Sequence[Any]) -> str:
    """What is wrong with a request, field by field: ``invalid request: messages should
    be a valid list (got 'hi'); model: Field required``."""
    if problems and tuple(problems[0]["loc"]) == ("body",):
        if problems[0]["type"] == "missing":
            return "the request body is missing: send one JSON object"
        kind = JSON_KINDS.get(type(problems[0].get("input")), "something else")
        return f"the request body must be one JSON object, not {kind}"
    said = [phrase(_where(p["loc"]), p["msg"], _shown(p)) for p in problems[:SHOWN_PROBLEMS]]
    more = len(problems) - SHOWN_PROBLEMS
    if more > 0:
        said.append(f"and {more} more")
    return "invalid request: " + "; ".join(said)


def _where(loc: Sequence[object]) -> str:
    """``("body", "messages", 0)`` as ``messages.0``; the whole body as ``body``; a query
    parameter as ``query parameter limit``."""
    kind, *rest = loc
    path = ".".join(str(part) for part in rest)
    if kind == "body":
        return path or "body"
    return f"{kind} parameter {path}" if path else str(kind)


def _shown(problem: Any) -> object:
    """The refused value, when it is a plain one worth showing."""
    value = problem.get("input")
    plain = problem["type"] != "missing" and isinstance(value, str | int | float | bool)
    return value if plain else None


def _field(problems: Sequence[Any]) -> str | None:
    """OpenAI's ``param``: the first field that is wrong."""
    loc: Sequence[object] = problems[0]["loc"] if problems else ()
    return str(loc[1]) if len(loc) > 1 and loc[0] == "body" else None


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.GanglionError, _ganglion)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
