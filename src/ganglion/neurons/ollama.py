"""The Ollama dialect: ``/api/version``, ``/api/tags``, ``/api/ps``, ``/api/chat``,
``/api/generate``, ``/api/embed``.

Where each :class:`~ganglion.neurons.base.TokenStats` number comes from:

* ``prompt_tokens`` / ``output_tokens``: Ollama's ``prompt_eval_count`` / ``eval_count``
  (older Ollama omits ``prompt_eval_count`` when the whole prompt was cached: then ``None``).
* ``cached_tokens``: ``prompt_eval_cached_count``, the prompt tokens found in the cache
  (recent Ollama; ``None`` when it does not say).
* ``prefill_s`` / ``decode_s`` / ``load_s``: ``prompt_eval_duration`` / ``eval_duration`` /
  ``load_duration``, nanoseconds in the wire, seconds here: the server's own clock.
* ``ttft_s``: streams only, measured with the injected clock from just before the request
  is sent to the first chunk with non-empty content. Non-streaming requests leave it
  ``None``: nothing is seen before the whole answer, and ``load + prefill`` would be the
  server's guess at its own compute, not a time to first token.
* ``wall_s``: the injected clock, from just before the request to the last byte.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from ganglion.errors import NeuronRequestError, NeuronStreamBroken, NotAnLLMServer
from ganglion.net import base_url
from ganglion.neurons.base import (
    ChatCall,
    Chunk,
    Completion,
    Dialect,
    Embeddings,
    GenerateCall,
    ModelInfo,
    ModelMemory,
    ProbeResult,
    TokenStats,
)
from ganglion.neurons.http import (
    DEFAULT_TIMEOUT,
    Connections,
    NeuronHTTP,
    Wire,
    decode_json,
    error_text,
    parse,
    read_to_end,
)
from ganglion.wire.ollama import (
    ChatResponse,
    EmbedResponse,
    FinalStats,
    GenerateResponse,
    ProcessResponse,
    TagsResponse,
    VersionResponse,
)

#: Status codes that mean "this path does not exist here": the server is not Ollama.
NOT_FOUND = frozenset({404, 405})

Answer = ChatResponse | GenerateResponse


class OllamaAdapter:
    """A neuron that speaks Ollama's native API."""

    dialect: Dialect = Dialect.OLLAMA
    times_whole_answers = True  # every answer carries its durations

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.perf_counter,
        connections: Connections | None = None,
    ) -> None:
        self.url = base_url(url)
        self._http = NeuronHTTP(
            self.url, client=client, transport=transport, timeout=timeout, connections=connections
        )
        self._clock = clock

    async def probe(self, *, models: bool = True) -> ProbeResult:
        """Liveness from ``/api/version`` (its round trip is ``latency_s``), the models from
        ``/api/tags``, the loaded ones from ``/api/ps``. Without ``models``, one request:
        ``/api/ps`` alone says that the server is alive and what it holds (an Ollama too old
        to have it asks ``/api/version``), and ``models`` is ``None``. Never loads or evicts a
        model."""
        if not models:
            return await self._heartbeat()
        start = self._clock()
        version = await self.version()
        latency = self._clock() - start
        tags = await self._get(TagsResponse, "/api/tags")
        running = await self._running()
        return self._result(running, [model.name for model in tags.models], version, latency)

    async def _heartbeat(self) -> ProbeResult:
        start = self._clock()
        running = await self._running()
        version = await self.version() if running is None else None
        return self._result(running, None, version, self._clock() - start)

    def _result(
        self,
        running: ProcessResponse | None,
        models: list[str] | None,
        version: str | None,
        latency_s: float,
    ) -> ProbeResult:
        return ProbeResult(
            dialect=self.dialect,
            models=models,
            loaded=None if running is None else [model.name for model in running.models],
            version=version,
            latency_s=latency_s,
            memory=None if running is None else _memory(running),
        )

    async def version(self) -> str:
        """The server's version; an unknown path or a non-Ollama body is NotAnLLMServer."""
        try:
            return (await self._get(VersionResponse, "/api/version")).version
        except NeuronRequestError as exc:
            if exc.status_code not in NOT_FOUND:
                raise
            raise NotAnLLMServer(f"{self.url} is not an Ollama server: {exc}") from exc

    async def list_models(self) -> list[ModelInfo]:
        tags = await self._get(TagsResponse, "/api/tags")
        return [
            ModelInfo(
                name=model.name,
                size_bytes=model.size,
                details=model.details.model_dump(exclude_none=True) if model.details else {},
            )
            for model in tags.models
        ]

    async def chat(self, request: ChatCall) -> Completion:
        body = {**_common(request, stream=False), "messages": request.messages}
        return await self._complete("/api/chat", body, ChatResponse, request.model)

    def chat_stream(self, request: ChatCall) -> AsyncIterator[Chunk]:
        body = {**_common(request, stream=True), "messages": request.messages}
        return self._stream("/api/chat", body, ChatResponse)

    async def generate(self, request: GenerateCall) -> Completion:
        body = {**_common(request, stream=False), "prompt": request.prompt}
        return await self._complete("/api/generate", body, GenerateResponse, request.model)

    def generate_stream(self, request: GenerateCall) -> AsyncIterator[Chunk]:
        body = {**_common(request, stream=True), "prompt": request.prompt}
        return self._stream("/api/generate", body, GenerateResponse)

    async def embed(self, model: str, inputs: list[str]) -> Embeddings:
        data = await self._http.post_json("/api/embed", {"model": model, "input": inputs})
        reply = parse(EmbedResponse, data, f"{self.url}/api/embed")
        return Embeddings(
            model=reply.model or model,
            vectors=reply.embeddings,
            prompt_tokens=reply.prompt_eval_count,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, model: type[Wire], path: str) -> Wire:
        return parse(model, await self._http.get_json(path), f"{self.url}{path}")

    async def _running(self) -> ProcessResponse | None:
        """The models in memory; ``None`` from an Ollama too old to have ``/api/ps``."""
        try:
            return await self._get(ProcessResponse, "/api/ps")
        except NeuronRequestError as exc:
            if exc.status_code in NOT_FOUND:
                return None
            raise

    async def _complete(
        self, path: str, body: dict[str, Any], wire: type[Answer], model: str
    ) -> Completion:
        start = self._clock()
        reply = await self._http.post_for(wire, path, body)
        wall = self._clock() - start
        return Completion(
            model=reply.model or model,
            text=_text(reply),
            stats=_stats(reply, wall_s=wall, ttft_s=None),
            done_reason=reply.done_reason,
        )

    async def _stream(
        self, path: str, body: dict[str, Any], wire: type[Answer]
    ) -> AsyncIterator[Chunk]:
        """NDJSON: one object a line; the last has ``done: true`` and the metrics."""
        where = f"{self.url}{path}"
        start = self._clock()
        ttft: float | None = None
        started = False
        batches = self._http.stream_lines(path, body)
        async for lines in batches:
            for line in lines:
                if (text := _plain_text(line, wire)) is not None:
                    started = True
                    if text:
                        if ttft is None:
                            ttft = self._clock() - start
                        yield Chunk(text)
                    continue
                if not line.strip():
                    continue
                data = decode_json(line, where, started=started)
                started = True
                if (error := error_text(data)) is not None:
                    raise NeuronStreamBroken(f"{where} failed midway: {error}")
                part = parse(wire, data, where)
                text = _text(part)
                if text and ttft is None:
                    ttft = self._clock() - start
                if part.done:
                    await read_to_end(batches)
                    stats = _stats(part, wall_s=self._clock() - start, ttft_s=ttft)
                    yield Chunk(text, done=True, stats=stats, done_reason=part.done_reason)
                    return
                if text:
                    yield Chunk(text)
        raise NeuronStreamBroken(f"{where} ended its stream without the final done message")


def _common(request: ChatCall | GenerateCall, *, stream: bool) -> dict[str, Any]:
    """The body fields chat and generate share: ``max_tokens`` is ``options.num_predict``."""
    native = dict(request.native) if request.native_dialect is Dialect.OLLAMA else {}
    options = {**native.pop("options", {}), **request.options}
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    body: dict[str, Any] = {**native, "model": request.model, "stream": stream}
    if options:
        body["options"] = options
    if request.format is not None:
        body["format"] = request.format
    return body


def _plain_text(line: bytes, wire: type[Answer]) -> str | None:
    """The text of a stream line that carries only text (not the last, not an error), read
    without validating it into ``wire``: most lines are such, at a sixth of the cost. ``None``
    for any other line, which takes the validating path."""
    try:
        data = orjson.loads(line)
        if data["done"] is not False or "error" in data:
            return None
        text = data["response"] if wire is GenerateResponse else data["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return text if isinstance(text, str) else None


def _text(reply: Answer) -> str:
    if isinstance(reply, GenerateResponse):
        return reply.response
    return reply.message.content if reply.message else ""


def _seconds(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else nanoseconds / 1e9


def _stats(metrics: FinalStats, *, wall_s: float, ttft_s: float | None) -> TokenStats:
    return TokenStats(
        prompt_tokens=metrics.prompt_eval_count,
        cached_tokens=metrics.prompt_eval_cached_count,
        output_tokens=metrics.eval_count,
        prefill_s=_seconds(metrics.prompt_eval_duration),
        decode_s=_seconds(metrics.eval_duration),
        load_s=_seconds(metrics.load_duration),
        ttft_s=ttft_s,
        wall_s=wall_s,
    )


def _memory(running: ProcessResponse) -> dict[str, ModelMemory]:
    """Where each loaded model is, for those ``/api/ps`` gives both sizes of."""
    return {
        model.name: ModelMemory(model.size, model.size_vram)
        for model in running.models
        if model.size is not None and model.size_vram is not None
    }
