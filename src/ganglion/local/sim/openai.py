"""The simulator's OpenAI API (``/v1/*``), written with :mod:`ganglion.wire.openai`.

It streams server-sent events ending in ``data: [DONE]``, as the official ``openai`` Python
client parses them: a chat's first chunk carries the role, its last the finish reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from itertools import count
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ganglion.local.sim.answers import embedding, openai_answer
from ganglion.local.sim.dialect import (
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
)
from ganglion.local.sim.engine import Generation, GenerationTimings, Simulator
from ganglion.wire import openai as wire
from ganglion.wire import sse
from ganglion.wire.encoding import dumps

CREATED = 1704067200
"""When every simulated model was "created" (Unix seconds): 2024-01-01."""

FINGERPRINT = "ganglion-sim"


class OpenAIAPI:
    """``/v1/*``: the OpenAI API, as Ollama, vLLM and llama.cpp's server speak it."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.ids = count(1)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
            Route("/v1/chat/completions", self.guarded(self.chat), methods=["POST"]),
            Route("/v1/completions", self.guarded(self.completions), methods=["POST"]),
            Route("/v1/embeddings", self.guarded(self.embeddings), methods=["POST"]),
        ]

    @staticmethod
    def error(status: int, message: str, kind: str, code: str | None = None) -> Response:
        detail = wire.ErrorDetail(message=message, type=kind, param=None, code=code)
        return answer_json(wire.ErrorResponse(error=detail), status)

    def not_found(self, model: object) -> Response:
        message = f"The model '{model}' does not exist or is not served by this simulator"
        return self.error(404, message, "invalid_request_error", "model_not_found")

    def guarded(self, handler: Endpoint) -> Endpoint:
        return guarded(handler, lambda message: self.error(400, message, "invalid_request_error"))

    @staticmethod
    def model_object(name: str) -> wire.Model:
        return wire.Model(id=name, object="model", created=CREATED, owned_by="ganglion-sim")

    async def models(self, request: Request) -> Response:
        data = [self.model_object(name) for name in self.sim.models]
        return answer_json(wire.ModelList(object="list", data=data))

    async def model(self, request: Request) -> Response:
        requested = request.path_params["model"]
        note_model(request, requested)
        name = self.sim.resolve(requested)
        return self.not_found(requested) if name is None else answer_json(self.model_object(name))

    async def chat(self, request: Request) -> Response:
        body = await read_body(request)
        words = messages_words(body.get("messages", []))
        note_prompt(request, body.get("messages") or [])
        return await self.answer(request, body, words, chat=True)

    async def completions(self, request: Request) -> Response:
        body = await read_body(request)
        prompt = body.get("prompt", "")
        texts = [prompt] if isinstance(prompt, str) else embed_inputs(prompt)
        return await self.answer(request, body, prompt_words(texts), chat=False)

    async def answer(
        self, request: Request, body: dict[str, Any], words: list[str], *, chat: bool
    ) -> Response:
        note_model(request, body.get("model"))
        model = self.sim.resolve(body.get("model"))
        if model is None:
            return self.not_found(body.get("model"))
        streaming = bool(body.get("stream", False))
        fault = self.sim.draw_fault()
        if fault == "fail":
            message = "simulated failure (ganglion sim --fail-rate)"
            return self.error(500, message, "server_error", "simulated_failure")
        if hangs(fault, streaming):
            return HangResponse(self.sim)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        said = openai_answer(body.get("response_format"), self.sim.config.structured)
        pieces, reason = output_for(self.sim, limit, said)
        stall = stall_point(self.sim, fault)
        job = Generation(model, max(1, len(words)), pieces, reason, stall, prompt=words)
        reply = wire.Reply(
            id=f"{'chatcmpl' if chat else 'cmpl'}-sim{next(self.ids)}",
            created=int(self.sim.wall().timestamp()),
            model=str(body["model"]),
            chat=chat,
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
            system_fingerprint=FINGERPRINT,
        )
        if streaming:
            return StreamingResponse(self.stream(job, reply), media_type=sse.MEDIA_TYPE)
        text = await collect(self.sim, job)
        answer = reply.whole(text, job.done_reason, self.usage(job))
        return Response(dumps(answer), media_type="application/json")

    async def stream(self, job: Generation, reply: wire.Reply) -> AsyncIterator[str]:
        if reply.chat:
            yield reply.event(reply.chunk("", role="assistant"))
        async with aclosing(self.sim.run(job)) as batches:
            async for batch in batches:
                yield "".join(reply.event(reply.chunk(piece)) for piece in batch)
        yield reply.event(reply.chunk(None if reply.chat else "", job.done_reason))
        if reply.include_usage:
            yield reply.event(reply.usage_chunk(self.usage(job)))
        yield sse.DONE

    def usage(self, job: Generation) -> dict[str, Any]:
        """The token counts, with the cached ones when the simulator has a prompt cache."""
        timings = job.timings or GenerationTimings()
        cached = timings.cached_tokens if self.sim.config.cache_slots else None
        return wire.usage(timings.prompt_tokens, timings.eval_count, cached)

    async def embeddings(self, request: Request) -> Response:
        body = await read_body(request)
        inputs = embed_inputs(body.get("input", ""))
        note_model(request, body.get("model"))
        model = self.sim.resolve(body.get("model"))
        if model is None:
            return self.not_found(body.get("model"))
        timings = await self.sim.warm(model, prompt_tokens(inputs))
        data = [
            wire.Embedding(object="embedding", index=i, embedding=embedding(model, text))
            for i, text in enumerate(inputs)
        ]
        tokens = timings.prompt_tokens
        usage = wire.Usage(prompt_tokens=tokens, total_tokens=tokens)
        embedded = wire.EmbeddingResponse(
            object="list", data=data, model=body["model"], usage=usage
        )
        encoding = body.get("encoding_format")
        return Response(
            embedded.encode(encoding if isinstance(encoding, str) else None),
            media_type="application/json",
        )
