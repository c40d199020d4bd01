"""A fake fleet for unit tests: Ollama-speaking neurons behind one ``httpx.MockTransport``.

Each fake neuron is keyed by its host:port; it can be taken down (connection refused) or
made to answer like a web server that is not an LLM server. Every request is logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI


@dataclass
class FakeOllama:
    models: list[str] = field(default_factory=lambda: ["llama3"])
    tokens_per_second: float = 50.0
    up: bool = True
    not_llm: bool = False
    hang: bool = False  # generation requests never answer
    die_after: int | None = None  # streams break after this many chunks
    refuse: int | None = None  # generation requests answer this HTTP status
    in_memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # /api/ps: size, VRAM
    log: list[str] = field(default_factory=list)
    streamed: list[bool] = field(default_factory=list)  # each generation request: streamed?

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request.url.path)
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        if self.not_llm:
            return httpx.Response(
                200, text="<html>hello</html>", headers={"content-type": "text/html"}
            )
        path = request.url.path
        if path == "/api/version":
            return httpx.Response(200, json={"version": "0.12.0"})
        if path == "/api/tags":
            return httpx.Response(
                200, json={"models": [{"name": m, "model": m, "size": 1} for m in self.models]}
            )
        if path == "/api/ps":
            running = [
                {"name": m, "model": m, "size": size, "size_vram": vram}
                for m, (size, vram) in self.in_memory.items()
            ]
            return httpx.Response(200, json={"models": running})
        if path == "/v1/models":
            return httpx.Response(404, json={"error": "not found"})
        if path in ("/api/chat", "/api/generate"):
            if self.refuse:
                return httpx.Response(self.refuse, json={"error": f"refused with {self.refuse}"})
            return self._generate(json.loads(request.content), chat=path == "/api/chat")
        return httpx.Response(404, json={"error": f"no route {path}"})

    def _generate(self, body: dict[str, object], *, chat: bool) -> httpx.Response:
        self.streamed.append(bool(body.get("stream", True)))
        options = body.get("options") or {}
        assert isinstance(options, dict)
        count = int(options.get("num_predict") or 16)
        eval_ns = int(count / self.tokens_per_second * 1e9)

        def text(content: str) -> dict[str, object]:
            if chat:
                return {"message": {"role": "assistant", "content": content}}
            return {"response": content}

        final = {
            "model": body["model"],
            "created_at": "2026-11-25T00:00:00Z",
            **text(""),
            "done": True,
            "done_reason": "length",
            "total_duration": eval_ns + 1000,
            "load_duration": 1000,
            "prompt_eval_count": 12,
            "prompt_eval_duration": 1_000_000,
            "eval_count": count,
            "eval_duration": eval_ns,
        }
        words = [
            {
                "model": body["model"],
                "created_at": "2026-11-25T00:00:00Z",
                **text("word "),
                "done": False,
            }
            for _ in range(count)
        ]
        if body.get("stream", True):
            lines = [json.dumps(chunk) + "\n" for chunk in [*words, final]]
            if self.die_after is not None:
                return httpx.Response(
                    200,
                    stream=Dying(lines[: self.die_after]),
                    headers={"content-type": "application/x-ndjson"},
                )
            return httpx.Response(
                200, text="".join(lines), headers={"content-type": "application/x-ndjson"}
            )
        return httpx.Response(200, json=final | text("word " * count))


class Dying(httpx.AsyncByteStream):
    """A response body that sends some lines, then loses the connection."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.lines:
            yield line.encode()
        raise httpx.ReadError("connection reset by peer")


@dataclass
class FakeFleet:
    neurons: dict[str, FakeOllama] = field(default_factory=dict)

    def add(self, hostport: str, **kwargs: object) -> FakeOllama:
        fake = FakeOllama(**kwargs)  # type: ignore[arg-type]
        self.neurons[hostport] = fake
        return fake

    async def handle(self, request: httpx.Request) -> httpx.Response:
        fake = self.neurons.get(f"{request.url.host}:{request.url.port or 80}")
        if fake is None:
            raise httpx.ConnectError("connection refused", request=request)
        if fake.hang and request.url.path in ("/api/chat", "/api/generate"):
            fake.log.append(request.url.path)
            await asyncio.sleep(3600)
        return fake.handle(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def gpu_and_cpu() -> FakeFleet:
    """The usual small fake fleet: a 90 tok/s GPU box and a 13 tok/s CPU box."""
    fake = FakeFleet()
    fake.add("gpu:11434", tokens_per_second=90.0)
    fake.add("cpu:11434", tokens_per_second=13.0, models=["llama3", "qwen"])
    return fake


@asynccontextmanager
async def in_process(
    fleet: FakeFleet, database: Path, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A gateway app with its lifespan running, in front of ``fleet``, and a client of it."""
    from ganglion.config import Settings
    from ganglion.gateway.app import create_app

    config = Settings(database_url=f"sqlite:///{database}", **settings)
    app = create_app(config, transport=fleet.transport(), probe=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app, client
