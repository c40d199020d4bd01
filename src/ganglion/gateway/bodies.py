"""Request bodies, one pure ASGI middleware for every route:

- **JSON whatever the Content-Type says.** Every body the gateway takes is JSON, and
  Ollama reads it so too: ``curl URL -d '{...}'`` sends ``x-www-form-urlencoded``, and
  some clients send no type at all.
- **At most** ``max_body_bytes``, else **413** in the caller's dialect. A declared
  ``Content-Length`` over the limit is refused before a byte of the body is read; a body
  without one (chunked) is counted as it arrives and refused as soon as it passes the
  limit, so no body larger than the limit is ever held.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ganglion.gateway import errors


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit; the app's HTTP error handler
    answers it (FastAPI passes an ``HTTPException`` raised while reading the body on)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


JSON_TYPE = (b"content-type", b"application/json")


class RequestBodies:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = errors.answer(Request(scope), 413, too_large(self.max_bytes))
            await refusal(scope, receive, send)
            return
        scope = {**scope, "headers": _as_json(scope["headers"])}
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def _as_json(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    declared = next((value for name, value in headers if name == b"content-type"), b"")
    kind = declared.split(b";")[0].strip().lower()
    if kind == b"application/json" or kind.endswith(b"+json"):
        return headers
    return [*(h for h in headers if h[0] != b"content-type"), JSON_TYPE]


def too_large(limit: int) -> str:
    return (
        f"the request body is larger than the gateway's limit of {size(limit)}: send less, "
        "or raise the limit (GANGLION_MAX_BODY_BYTES, or max_body_bytes in the config file)"
    )


def size(count: int) -> str:
    """``8388608`` as ``8 MiB (8388608 bytes)``; small or uneven counts in bytes alone."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit} ({count} bytes)"
    return f"{count} bytes"
