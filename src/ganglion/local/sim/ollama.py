"""The simulator's Ollama API (``/api/*``), written with :mod:`ganglion.wire.ollama`.

It streams NDJSON with a final ``done: true`` line carrying durations in nanoseconds, as the
official ``ollama`` Python client parses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ganglion.local.sim.answers import EMBEDDING_DIM, embedding, ollama_answer
from ganglion.local.sim.dialect import (
    BadRequest,
    Endpoint,
    HangResponse,
    answer_json,
    collect,
    embed_inputs,
    guarded,
    hangs,
    messages_words,
    note_model,
    note_prompt,
    output_for,
    prompt_tokens,
    prompt_words,
    read_body,
    stall_point,
    text_of,
)
from ganglion.local.sim.engine import Generation, GenerationTimings, Simulator
from ganglion.wire import ollama as wire
from ganglion.wire.encoding import dumps

VERSION = "0.9.0-ganglion-sim"
"""What ``/api/version`` answers: an Ollama-like version, labelled as the simulator."""

CONTEXT_LENGTH = 8192
KEEP_LOADED = timedelta(days=3650)
"""A loaded model stays loaded: ``/api/ps`` shows it expiring ten years on."""

MODIFIED_AT = "2024-01-01T00:00:00Z"
SIZE = 1_000_000_000
DETAILS = wire.ModelDetails(
    parent_model="",
    format="gguf",
    family="ganglion-sim",
    families=["ganglion-sim"],
    parameter_size="0B",
    quantization_level="SIM",
)


class OllamaAPI:
    """``/api/*``: Ollama's native API."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/api/version", self.version, methods=["GET"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/ps", self.ps, methods=["GET"]),
            Route("/api/show", self.guarded(self.show), methods=["POST"]),
            Route("/api/chat", self.guarded(self.chat), methods=["POST"]),
            Route("/api/generate", self.guarded(self.generate), methods=["POST"]),
            Route("/api/embed", self.guarded(self.embed), methods=["POST"]),
            Route("/api/embeddings", self.guarded(self.embeddings), methods=["POST"]),
        ]

    @staticmethod
    def error(status: int, message: str) -> Response:
        return answer_json(wire.ErrorResponse(error=message), status)

    def guarded(self, handler: Endpoint) -> Endpoint:
        return guarded(handler, lambda message: self.error(400, message))

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running (ganglion sim: a simulated neuron)")

    async def version(self, request: Request) -> Response:
        return answer_json(wire.VersionResponse(version=VERSION))

    async def tags(self, request: Request) -> Response:
        listed = [
            wire.ListedModel(**_card(name), modified_at=MODIFIED_AT) for name in self.sim.models
        ]
        return answer_json(wire.TagsResponse(models=listed))

    async def ps(self, request: Request) -> Response:
        loaded = [
            wire.RunningModel(
                **_card(name),
                expires_at=(since + KEEP_LOADED).isoformat(),
                size_vram=round(SIZE * self.sim.config.vram),
                context_length=CONTEXT_LENGTH,
            )
            for name, since in sorted(self.sim.loaded.items())
        ]
        return answer_json(wire.ProcessResponse(models=loaded))

    async def show(self, request: Request) -> Response:
        body = await read_body(request)
        requested = body.get("model") or body.get("name")
        note_model(request, requested)
        model = self.sim.resolve(requested)
        if model is None:
            return self.error(404, f"model '{requested}' not found")
        shown = wire.ShowResponse(
            modelfile=f"# ganglion sim: {model} is simulated; its text is filler words",
            parameters="",
            template="{{ .Prompt }}",
            details=DETAILS,
            model_info={
                "general.architecture": "ganglion-sim",
                "general.parameter_count": 0,
                "ganglion-sim.context_length": CONTEXT_LENGTH,
                "ganglion-sim.embedding_length": EMBEDDING_DIM,
            },
            capabilities=["completion", "embedding"],
            modified_at=MODIFIED_AT,
        )
        return answer_json(shown)

    async def chat(self, request: Request) -> Response:
        body = await read_body(request)
        words = messages_words(body.get("messages", []))
        note_prompt(request, body.get("messages") or [])
        return await self.answer(request, body, words, chat=True)

    async def generate(self, request: Request) -> Response:
        body = await read_body(request)
        texts = [text_of(body.get("system", "")), text_of(body.get("prompt", ""))]
        return await self.answer(request, body, prompt_words(texts), chat=False)

    async def answer(
        self, request: Request, body: dict[str, Any], words: list[str], *, chat: bool
    ) -> Response:
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("'options' must be an object")
        note_model(request, body.get("model"))
        model = self.sim.resolve(body.get("model"))
        if model is None:
            return self.error(404, f"model '{body.get('model')}' not found")
        streaming = bool(body.get("stream", True))
        fault = self.sim.draw_fault()
        if fault == "fail":
            return self.error(500, "simulated failure (ganglion sim --fail-rate)")
        if hangs(fault, streaming):
            return HangResponse(self.sim)
        said = ollama_answer(body.get("format"), self.sim.config.structured)
        pieces, reason = output_for(self.sim, options.get("num_predict"), said)
        stall = stall_point(self.sim, fault)
        job = Generation(model, max(1, len(words)), pieces, reason, stall, prompt=words)
        name = str(body["model"])
        if streaming:
            return StreamingResponse(self.stream(job, name, chat), media_type=wire.NDJSON)
        text = await collect(self.sim, job)
        whole = self.reply(name, text, chat, end=self.ending(job))
        return Response(dumps(whole), media_type="application/json")

    async def stream(self, job: Generation, name: str, chat: bool) -> AsyncIterator[str]:
        async with aclosing(self.sim.run(job)) as batches:
            async for batch in batches:
                yield "".join(wire.line(self.reply(name, piece, chat)) for piece in batch)
        yield wire.line(self.reply(name, "", chat, end=self.ending(job)))

    def reply(
        self, name: str, text: str, chat: bool, end: wire.Ending | None = None
    ) -> wire.Answer:
        created_at = wire.timestamp(self.sim.wall())
        return wire.answer(name, text, chat=chat, created_at=created_at, end=end)

    @staticmethod
    def ending(job: Generation) -> wire.Ending:
        return (job.timings or GenerationTimings()).ending(job.done_reason)

    async def embed(self, request: Request) -> Response:
        body = await read_body(request)
        inputs = embed_inputs(body.get("input", ""))
        found = await self.embedding_model(request, body)
        if isinstance(found, Response):
            return found
        timings = await self.sim.warm(found, prompt_tokens(inputs))
        embedded = wire.EmbedResponse(
            model=body["model"],
            embeddings=[embedding(found, text) for text in inputs],
            total_duration=round(timings.total_s * 1e9),
            load_duration=round(timings.load_s * 1e9),
            prompt_eval_count=timings.prompt_tokens,
        )
        return answer_json(embedded)

    async def embeddings(self, request: Request) -> Response:
        body = await read_body(request)
        found = await self.embedding_model(request, body)
        if isinstance(found, Response):
            return found
        text = text_of(body.get("prompt", ""))
        await self.sim.warm(found, prompt_tokens([text]))
        return answer_json(wire.LegacyEmbeddingsResponse(embedding=embedding(found, text)))

    async def embedding_model(self, request: Request, body: dict[str, Any]) -> str | Response:
        note_model(request, body.get("model"))
        model = self.sim.resolve(body.get("model"))
        return model or self.error(404, f"model '{body.get('model')}' not found")


def _card(name: str) -> dict[str, Any]:
    """What ``/api/tags`` and ``/api/ps`` both say of a model."""
    digest = hashlib.sha256(f"ganglion-sim:{name}".encode()).hexdigest()
    return {"name": name, "model": name, "size": SIZE, "digest": digest, "details": DETAILS}
