"""The four paths that carry the traffic, served past the framework.

``POST /api/chat``, ``/api/generate``, ``/v1/chat/completions`` and ``/v1/completions`` are
every token the fleet answers, so they skip what the framework adds per request on its way
to an endpoint: its middleware stack, the route table, dependency injection, reading the
body twice (as JSON, then into the model). :class:`HotPaths` stands in front of the app
(``GatewayApp``), reads the body once, validates it into the endpoint's own model straight
from the bytes, checks the API key, and calls the endpoint function itself: the same code,
the same answers, the same headers.

Anything off the happy path takes the framework's path instead, with the body already read
handed on: a body that is not valid for the endpoint, one over the size limit. So every
error still reads exactly as the rest of the API's do, and the OpenAPI docs (``/docs``)
still describe these routes, which exist there too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ganglion.errors import GanglionError
from ganglion.gateway import auth, errors, ollama_api, openai_api
from ganglion.gateway.state import Gateway
from ganglion.wire import ollama as ollama_wire
from ganglion.wire import openai as openai_wire

Endpoint = Callable[[Any, Request, Gateway], Awaitable[Response]]

#: Each hot path: the model its body must validate into, and the endpoint that answers it.
HOT: dict[str, tuple[type[BaseModel], Endpoint]] = {
    "/api/chat": (ollama_wire.ChatRequest, ollama_api.chat),
    "/api/generate": (ollama_wire.GenerateRequest, ollama_api.generate),
    "/v1/chat/completions": (openai_wire.ChatCompletionRequest, openai_api.chat_completions),
    "/v1/completions": (openai_wire.CompletionRequest, openai_api.completions),
}


class HotPaths:
    """ASGI middleware: the hot paths answered directly, everything else passed on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = HOT.get(scope["path"]) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, whole = await _read(receive, self.max_bytes)
        model, endpoint = hot
        try:
            call = model.model_validate_json(body) if whole else None
        except ValidationError:
            call = None
        if call is None:  # the framework's path says what is wrong, as everywhere else
            await self.app(scope, _replay(body, receive), send)
            return
        request = Request(scope, receive)
        gateway: Gateway = scope["app"].state.gateway
        try:
            if gateway.settings.keys_enforced:  # else open: a loopback bind without keys
                await auth.user_access(request)
            response = await endpoint(call, request, gateway)
        except GanglionError as error:
            response = errors.for_error(request, error)
        await response(scope, receive, send)


async def _read(receive: Receive, max_bytes: int) -> tuple[bytes, bool]:
    """The body, and whether it is all there: reading stops once it passes ``max_bytes``."""
    parts: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), False  # the client left: the framework's path ends it
        part = message.get("body", b"")
        parts.append(part)
        seen += len(part)
        if seen > max_bytes:
            return b"".join(parts), False
        if not message.get("more_body", False):
            return b"".join(parts), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` first, then whatever the client sends next."""
    given = False

    async def again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again
