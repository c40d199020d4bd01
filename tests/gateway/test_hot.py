"""The hot paths: a valid request goes straight to its endpoint; anything else (a body that
does not validate, one over the limit, another path or method) goes through the framework
with its body intact. The rest of tests/gateway checks that answers and errors are unchanged
through the real app."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ganglion.gateway import hot
from ganglion.wire import ollama as wire


class Inner:
    """The framework's app, standing in: records each request and the body it was given."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await JSONResponse({"via": "framework"})(scope, receive, send)


async def call(
    middleware: hot.HotPaths, path: str, body: bytes, *, method: str = "POST", pieces: int = 1
) -> dict[str, Any]:
    gateway = SimpleNamespace(settings=SimpleNamespace(keys_enforced=False))
    app = SimpleNamespace(state=SimpleNamespace(gateway=gateway))
    scope = {"type": "http", "method": method, "path": path, "headers": [], "app": app}
    size = max(1, -(-len(body) // pieces))
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    answer: dict[str, Any] = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    return answer


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The hot endpoint for /api/chat replaced by one that records what it was called with."""
    calls: list[Any] = []

    async def endpoint(body: Any, request: Request, gateway: Any) -> Response:
        calls.append(body)
        return JSONResponse({"via": "hot"})

    monkeypatch.setitem(hot.HOT, "/api/chat", (wire.ChatRequest, endpoint))
    return calls


CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


async def test_a_valid_request_goes_straight_to_its_endpoint(served: list[Any]) -> None:
    inner = Inner()
    answer = await call(hot.HotPaths(inner, max_bytes=1 << 20), "/api/chat", CHAT, pieces=3)
    assert answer == {"via": "hot"}
    assert inner.bodies == []
    (body,) = served
    assert isinstance(body, wire.ChatRequest)
    assert (body.model, body.messages) == ("m", [{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"messages": []}', b"[1, 2]", b""],
    ids=["malformed", "no model", "not an object", "empty"],
)
async def test_an_invalid_body_goes_to_the_framework_intact(served: list[Any], body: bytes) -> None:
    inner = Inner()
    answer = await call(hot.HotPaths(inner, max_bytes=1 << 20), "/api/chat", body, pieces=2)
    assert answer == {"via": "framework"}
    assert inner.bodies == [body]
    assert served == []


async def test_a_body_over_the_limit_goes_to_the_framework(served: list[Any]) -> None:
    inner = Inner()
    answer = await call(hot.HotPaths(inner, max_bytes=16), "/api/chat", CHAT, pieces=8)
    assert answer == {"via": "framework"}
    (given,) = inner.bodies
    assert 16 < len(given) <= len(CHAT)  # reading stopped soon after the limit
    assert served == []


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/chat"), ("POST", "/api/tags")])
async def test_other_paths_and_methods_pass_through(
    served: list[Any], method: str, path: str
) -> None:
    inner = Inner()
    answer = await call(hot.HotPaths(inner, max_bytes=1 << 20), path, CHAT, method=method)
    assert answer == {"via": "framework"}
    assert inner.bodies == [CHAT]
    assert served == []
