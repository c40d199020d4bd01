"""The OpenAI-compatible dialect (llama.cpp server, llama-cpp-python, vLLM, LM Studio):
``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Where each :class:`~ganglion.neurons.base.TokenStats` number comes from, best source first:

* ``prompt_tokens`` / ``output_tokens``: ``usage.prompt_tokens`` / ``usage.completion_tokens``
  (streams ask for it with ``stream_options.include_usage``); else llama.cpp's
  ``timings.prompt_n`` / ``timings.predicted_n``; else, for a stream whose server sent no
  usage at all, ``output_tokens`` is the number of non-empty content deltas (one token
  each on llama.cpp and vLLM, an estimate elsewhere) and ``prompt_tokens`` is ``None``.
* ``cached_tokens``: ``usage.prompt_tokens_details.cached_tokens`` (vLLM, OpenAI), else
  llama.cpp's ``timings.cache_n``; ``None`` when the server does not say.
* ``prefill_s`` / ``decode_s``: llama.cpp's ``timings.prompt_ms`` / ``timings.predicted_ms``
  when the server sends them (the server's own clock; note ``prompt_ms`` covers only the
  prompt tokens not already cached). Otherwise, for streams, ``decode_s = wall_s - ttft_s``
  (first content delta to the end of the stream; ``None`` when the tokens all arrived in one
  burst, see :func:`_arrived_at_once`) and ``prefill_s`` is ``None``: ttft also
  holds network and queueing time, so it is not called prefill. A non-streaming answer
  without ``timings`` leaves both ``None``: one wall time cannot be split honestly.
* ``load_s``: always ``None``; this dialect does not say.
* ``ttft_s``: streams only, the injected clock from just before the request to the first
  content delta; ``None`` for non-streaming requests.
* ``wall_s``: the injected clock, from just before the request to the last byte.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeGuard

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
    ProbeResult,
    TokenStats,
)
from ganglion.neurons.http import (
    DEFAULT_TIMEOUT,
    Connections,
    NeuronHTTP,
    Retry,
    decode_json,
    error_text,
    parse,
    read_to_end,
)
from ganglion.wire.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    EmbeddingResponse,
    ModelList,
    Timings,
    Usage,
)

#: Status codes that mean "this path does not exist here": not an OpenAI-compatible server.
NOT_FOUND = frozenset({404, 405})

#: SSE field lines that carry no data for us (``: comment``, ``event:``, ``id:``, ``retry:``).
SSE_OTHER_FIELDS = (b":", b"event:", b"id:", b"retry:")

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


def response_format(
    format: str | dict[str, Any], *, schema_in_json_object: bool = False
) -> dict[str, Any]:
    """Ollama's ``format`` as OpenAI's ``response_format``: ``"json"`` or a JSON schema.

    A schema goes as OpenAI's ``json_schema``, or with ``schema_in_json_object`` as
    ``{"type": "json_object", "schema": ...}``: the only form llama-cpp-python's server
    accepts (it answers 500 to ``json_schema``), which llama.cpp's own server takes too.
    """
    if isinstance(format, dict):
        if schema_in_json_object:
            return {"type": "json_object", "schema": format}
        schema = {"name": "output", "schema": format, "strict": True}
        return {"type": "json_schema", "json_schema": schema}
    if format == "json":
        return {"type": "json_object"}
    raise ValueError(f'format must be "json" or a JSON schema (a dict), not {format!r}')


class OpenAIAdapter:
    """A neuron that speaks the OpenAI-compatible API. ``url`` may end in ``/v1`` or not."""

    dialect: Dialect = Dialect.OPENAI

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
        self.url = base_url(url).removesuffix("/v1")
        self._http = NeuronHTTP(
            self.url, client=client, transport=transport, timeout=timeout, connections=connections
        )
        self._clock = clock
        # Learnt from the first refusal of ``json_schema``; see :func:`response_format`.
        self._schema_in_json_object = False
        # Whether a whole answer says what its decode took: learnt from the first answer
        # with llama.cpp's ``timings`` (vLLM never sends them).
        self.times_whole_answers = False

    async def probe(self, *, models: bool = True) -> ProbeResult:
        """Liveness and models from ``GET /v1/models`` alone, whether ``models`` are asked for
        or not (the one request says both); ``loaded`` is unknown here."""
        start = self._clock()
        listed = await self._models()
        return ProbeResult(
            dialect=self.dialect,
            models=[model.id for model in listed.data],
            loaded=None,
            version=None,
            latency_s=self._clock() - start,
        )

    async def list_models(self) -> list[ModelInfo]:
        models = await self._models()
        return [
            ModelInfo(name=model.id, details=model.model_dump(exclude={"id"}, exclude_none=True))
            for model in models.data
        ]

    async def chat(self, request: ChatCall) -> Completion:
        body = {**self._common(request, stream=False), "messages": request.messages}
        return await self._complete(CHAT_PATH, body, request.model)

    def chat_stream(self, request: ChatCall) -> AsyncIterator[Chunk]:
        body = {**self._common(request, stream=True), "messages": request.messages}
        return self._stream(CHAT_PATH, body)

    async def generate(self, request: GenerateCall) -> Completion:
        body = {**self._common(request, stream=False), "prompt": request.prompt}
        return await self._complete(COMPLETIONS_PATH, body, request.model)

    def generate_stream(self, request: GenerateCall) -> AsyncIterator[Chunk]:
        body = {**self._common(request, stream=True), "prompt": request.prompt}
        return self._stream(COMPLETIONS_PATH, body)

    async def embed(self, model: str, inputs: list[str]) -> Embeddings:
        """One vector per input. A server that answers one vector per *token* (llama-cpp-python
        with a chat model: it cannot pool) is refused with NeuronRequestError, not averaged."""
        where = f"{self.url}/v1/embeddings"
        data = await self._http.post_json("/v1/embeddings", {"model": model, "input": inputs})
        reply = parse(EmbeddingResponse, data, where)
        vectors: list[list[float]] = []
        for item in sorted(reply.data, key=lambda item: item.index):
            if not _one_vector(item.embedding):
                raise NeuronRequestError(
                    f"{where} answered one vector per token, not one per input: it does not "
                    f"pool embeddings for {model}; use an embedding model"
                )
            vectors.append(item.embedding)
        return Embeddings(
            model=reply.model or model,
            vectors=vectors,
            prompt_tokens=reply.usage.prompt_tokens if reply.usage else None,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _common(self, request: ChatCall | GenerateCall, *, stream: bool) -> dict[str, Any]:
        """The body fields chat and completions share. ``options`` go through as top-level
        fields (temperature, seed, top_p, stop, ...); ours win over theirs."""
        native = request.native if request.native_dialect is Dialect.OPENAI else {}
        body: dict[str, Any] = {
            **native,
            **request.options,
            "model": request.model,
            "stream": stream,
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.format is not None:
            body["response_format"] = response_format(
                request.format, schema_in_json_object=self._schema_in_json_object
            )
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _schema_retry(self, body: dict[str, Any]) -> Retry | None:
        """Resend a refused ``json_schema`` in llama-cpp-python's form, and keep to it."""
        wanted = body.get("response_format") or {}
        if wanted.get("type") != "json_schema":
            return None
        schema = wanted["json_schema"]["schema"]

        def retry(refusal: NeuronRequestError) -> dict[str, Any] | None:
            if "response_format" not in str(refusal):
                return None
            self._schema_in_json_object = True
            return {**body, "response_format": response_format(schema, schema_in_json_object=True)}

        return retry

    async def _models(self) -> ModelList:
        try:
            data = await self._http.get_json("/v1/models")
        except NeuronRequestError as exc:
            if exc.status_code not in NOT_FOUND:
                raise
            raise NotAnLLMServer(f"{self.url} is not an OpenAI-compatible server: {exc}") from exc
        return parse(ModelList, data, f"{self.url}/v1/models")

    async def _complete(self, path: str, body: dict[str, Any], model: str) -> Completion:
        where = f"{self.url}{path}"
        start = self._clock()
        reply = await self._http.post_for(ChatCompletion, path, body, self._schema_retry(body))
        wall = self._clock() - start
        if not reply.choices:
            raise NotAnLLMServer(f"{where} answered a completion without choices")
        choice = reply.choices[0]
        self.times_whole_answers = self.times_whole_answers or _has_timings(reply.timings)
        return Completion(
            model=reply.model or model,
            text=_text(choice),
            stats=_stats(reply.usage, reply.timings, wall_s=wall, ttft_s=None, deltas=None),
            done_reason=choice.finish_reason,
        )

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """SSE: ``data: {chunk}`` events, then ``data: [DONE]``. With ``include_usage`` the
        last chunk before ``[DONE]`` has no choices and carries ``usage``."""
        where = f"{self.url}{path}"
        start = self._clock()
        ttft: float | None = None
        usage: Usage | None = None
        timings: Timings | None = None
        finish: str | None = None
        deltas = 0
        started = False
        batches = self._http.stream_lines(path, body, self._schema_retry(body))
        async for lines in batches:
            for line in lines:
                if line.startswith(b"data:"):
                    payload = line[5:]  # JSON allows the space before it
                elif not line.strip() or line.startswith(SSE_OTHER_FIELDS):
                    continue
                else:
                    payload = line
                if (text := _plain_delta(payload)) is not None:
                    started = True
                    if text:
                        ttft = self._clock() - start if ttft is None else ttft
                        deltas += 1
                        yield Chunk(text)
                    continue
                payload = payload.strip()
                if payload == b"[DONE]":
                    await read_to_end(batches)
                    self.times_whole_answers = self.times_whole_answers or _has_timings(timings)
                    wall = self._clock() - start
                    stats = _stats(usage, timings, wall_s=wall, ttft_s=ttft, deltas=deltas)
                    yield Chunk("", done=True, stats=stats, done_reason=finish)
                    return
                data = decode_json(payload, where, started=started)
                started = True
                if (error := error_text(data)) is not None:
                    raise NeuronStreamBroken(f"{where} failed midway: {error}")
                chunk = parse(ChatCompletionChunk, data, where)
                usage = chunk.usage or usage
                timings = chunk.timings or timings
                for choice in chunk.choices[:1]:
                    finish = choice.finish_reason or finish
                    if text := _text(choice):
                        ttft = self._clock() - start if ttft is None else ttft
                        deltas += 1
                        yield Chunk(text)
        raise NeuronStreamBroken(f"{where} ended its stream without data: [DONE]")


def _has_timings(timings: Timings | None) -> bool:
    """Whether an answer said how long its decode took, in llama.cpp's ``timings``."""
    return timings is not None and timings.predicted_ms is not None


def _one_vector(embedding: list[float] | list[list[float]]) -> TypeGuard[list[float]]:
    return not any(isinstance(value, list) for value in embedding)


def _plain_delta(payload: bytes) -> str | None:
    """The text of a stream event that carries only text (no finish, usage, timings or error),
    read without validating it as a :class:`ChatCompletionChunk`: most events are such, at a
    sixth of the cost. ``None`` for any other event, which takes the validating path."""
    try:
        data = orjson.loads(payload)
        if data.get("usage") or data.get("timings") or "error" in data:
            return None
        choice = data["choices"][0]
        if choice.get("finish_reason") is not None:
            return None
        delta = choice.get("delta")
        text = (delta.get("content") if delta else None) or choice.get("text") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return text if isinstance(text, str) else None


def _text(choice: Choice | ChunkChoice) -> str:
    """The content of a chat message or delta, or a text completion's ``text``."""
    said = choice.message if isinstance(choice, Choice) else choice.delta
    if said is not None and said.content:
        return said.content
    return choice.text or ""


BURST_TOKENS = 8
BURST_SHARE = 0.02


def _arrived_at_once(decode_s: float, wall_s: float, tokens: int | None) -> bool:
    """True when a stream's tokens all reached us in one burst (a starved reader, a buffering
    proxy): then the client's clock says nothing about decode speed, and no number is better
    than a wildly inflated one."""
    return (tokens or 0) >= BURST_TOKENS and decode_s < BURST_SHARE * wall_s


def _stats(
    usage: Usage | None,
    timings: Timings | None,
    *,
    wall_s: float,
    ttft_s: float | None,
    deltas: int | None,
) -> TokenStats:
    usage = usage or Usage()
    timings = timings or Timings()
    output = usage.completion_tokens
    if output is None:
        output = timings.predicted_n if timings.predicted_n is not None else deltas
    decode_s: float | None = None
    if timings.predicted_ms is not None:
        decode_s = timings.predicted_ms / 1000
    elif ttft_s is not None and not _arrived_at_once(wall_s - ttft_s, wall_s, output):
        decode_s = wall_s - ttft_s
    cached = usage.cached_tokens if usage.cached_tokens is not None else timings.cache_n
    prompt = usage.prompt_tokens
    if prompt is None and timings.prompt_n is not None:
        prompt = timings.prompt_n + (timings.cache_n or 0)
    return TokenStats(
        prompt_tokens=prompt,
        cached_tokens=cached,
        output_tokens=output,
        prefill_s=None if timings.prompt_ms is None else timings.prompt_ms / 1000,
        decode_s=decode_s,
        load_s=None,
        ttft_s=ttft_s,
        wall_s=wall_s,
    )
