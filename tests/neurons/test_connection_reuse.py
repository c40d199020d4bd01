"""A streamed answer read to its end hands its connection back: request after request to a
neuron goes over one kept-alive connection, not a new TCP handshake each (through a real
uvicorn server on loopback that notes each request's client port)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ganglion.neurons.base import ChatCall
from ganglion.neurons.ollama import OllamaAdapter
from ganglion.neurons.openai import OpenAIAdapter
from tests.neurons.conftest import Upstream, served

WORDS = 4


class Chats(Upstream):
    """Both dialects' streamed chat."""

    async def answer(self, path: str, send: Any) -> None:
        if path == "/api/chat":
            kind = b"application/x-ndjson"
            said = {"model": "m", "created_at": "2026-11-30T00:00:00Z"}
            lines = [{**said, "message": {"role": "assistant", "content": "w "}, "done": False}]
            lines *= WORDS
            end = {"role": "assistant", "content": ""}
            lines.append({**said, "message": end, "done": True, "eval_count": WORDS})
            parts = [json.dumps(line).encode() + b"\n" for line in lines]
        else:
            kind = b"text/event-stream"
            delta = {"choices": [{"index": 0, "delta": {"content": "w "}}]}
            parts = [b"data: " + json.dumps(delta).encode() + b"\n\n"] * WORDS
            parts.append(b"data: [DONE]\n\n")
        headers = [(b"content-type", kind)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Chats, str]]:
    app = Chats()
    async with served(app) as url:
        yield app, url


@pytest.mark.parametrize("adapter_kind", [OllamaAdapter, OpenAIAdapter])
async def test_answers_read_to_the_end_reuse_one_connection(
    upstream: tuple[Chats, str], adapter_kind: type[OllamaAdapter] | type[OpenAIAdapter]
) -> None:
    app, url = upstream
    adapter = adapter_kind(url)
    call = ChatCall(model="m", messages=[{"role": "user", "content": "hi"}])
    try:
        for _ in range(5):
            stream = adapter.chat_stream(call)
            chunks = []
            async for chunk in stream:  # as the dispatcher does: stop at the final chunk
                chunks.append(chunk)
                if chunk.done:
                    break
            await stream.aclose()  # type: ignore[attr-defined]
            assert "".join(c.text for c in chunks) == "w " * WORDS
    finally:
        await adapter.aclose()
    assert len(app.ports) == 5
    assert len(set(app.ports)) == 1  # one connection, kept alive
