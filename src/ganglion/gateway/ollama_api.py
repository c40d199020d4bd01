"""The Ollama API for the whole fleet: what works against Ollama works against the gateway.

Requests are routed to the neuron that will finish first, whichever dialect it speaks; the
answer comes back in Ollama's shape (NDJSON when streaming), with Ollama's timing fields
passed through from Ollama neurons or computed from our measurements for OpenAI ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ganglion import __version__
from ganglion.dispatch import Call, Stream, Whole
from ganglion.errors import BrokenMidStream
from ganglion.gateway import front
from ganglion.gateway.state import Gateway, GatewayDep
from ganglion.gateway.streamed import Streamed
from ganglion.neurons.base import ChatCall, Chunk, Dialect, GenerateCall, TokenStats
from ganglion.routing import Job, same_model
from ganglion.wire import ollama as wire
from ganglion.wire.encoding import dumps_bytes

router = APIRouter(prefix="/api", tags=["ollama"])

OLLAMA_API_VERSION = "0.9.0"  # the Ollama API level the gateway speaks


@router.get("/version")
async def version() -> Response:
    return _json(wire.VersionResponse(version=OLLAMA_API_VERSION, ganglion=__version__))


@router.get("/tags")
async def tags(gateway: GatewayDep) -> Response:
    """Every model any active neuron serves, once."""
    seen: list[str] = []
    for neuron in gateway.registry.neurons():
        if neuron.is_active:
            seen += [m for m in neuron.models if not any(same_model(m, n) for n in seen)]
    details = wire.ModelDetails(format="", family="", parameter_size="")
    listed = [
        wire.ListedModel(
            name=model, model=model, modified_at=_now(), size=0, digest="", details=details
        )
        for model in seen
    ]
    return _json(wire.TagsResponse(models=listed))


@router.get("/ps")
async def ps(gateway: GatewayDep) -> Response:
    """Models loaded in memory now, across the fleet (from each neuron's ``/api/ps``)."""
    loaded = [
        wire.RunningModel(name=model, model=model, size=0, digest="", size_vram=0, neuron=n.name)
        for n in gateway.registry.neurons()
        if n.is_active
        for model in n.loaded or []
    ]
    return _json(wire.ProcessResponse(models=loaded))


@router.post("/show")
async def show(body: wire.ShowRequest, gateway: GatewayDep) -> Response:
    model = body.model or body.name or ""
    if not gateway.router.serving(model):
        raise gateway.dispatcher.unavailable(model)
    details = wire.ModelDetails(format="", family="", parameter_size="", quantization_level="")
    return _json(wire.ShowResponse(details=details, capabilities=["completion"]))


@router.post("/chat", response_model=None)
async def chat(body: wire.ChatRequest, request: Request, gateway: GatewayDep) -> Response:
    internal = ChatCall(model=body.model, messages=body.messages, **_shared(body))
    job = front.chat_job(body.model, body.messages, internal.max_tokens)
    return await _answer(gateway, request, job, internal, streaming=body.stream)


@router.post("/generate", response_model=None)
async def generate(body: wire.GenerateRequest, request: Request, gateway: GatewayDep) -> Response:
    internal = GenerateCall(model=body.model, prompt=body.prompt, **_shared(body))
    job = front.text_job(body.model, body.prompt, internal.max_tokens)
    return await _answer(gateway, request, job, internal, streaming=body.stream)


@router.post("/embed")
async def embed(body: wire.EmbedRequest, request: Request, gateway: GatewayDep) -> Response:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    neuron, result = await gateway.dispatcher.embed(
        front.job(body.model, inputs, 1), inputs, front.pinned(request)
    )
    answer = wire.EmbedResponse(
        model=body.model, embeddings=result.vectors, prompt_eval_count=result.prompt_tokens or 0
    )
    return _json(answer, front.served_by(neuron))


@router.post("/embeddings")
async def embeddings(
    body: wire.LegacyEmbeddingsRequest, request: Request, gateway: GatewayDep
) -> Response:
    neuron, result = await gateway.dispatcher.embed(
        front.job(body.model, [body.prompt], 1), [body.prompt], front.pinned(request)
    )
    answer = wire.LegacyEmbeddingsResponse(embedding=result.vectors[0])
    return _json(answer, front.served_by(neuron))


def _shared(body: wire.ChatRequest | wire.GenerateRequest) -> dict[str, Any]:
    """The fields chat and generate share, split into what every dialect understands and
    what only an Ollama neuron should get (``keep_alive``, ``num_ctx``...)."""
    common, native_options = front.split_options(dict(body.options))
    return {
        "max_tokens": _int(native_options.pop("num_predict", None)),
        "format": body.format or None,
        "options": common,
        "native": {**(body.model_extra or {}), "options": native_options},
        "native_dialect": Dialect.OLLAMA,
    }


async def _answer(
    gateway: Gateway, request: Request, job: Job, call: Call, *, streaming: bool
) -> Response:
    chat = isinstance(call, ChatCall)
    endpoint, pinned = ("chat" if chat else "generate"), front.pinned(request)
    if streaming:
        stream = await gateway.dispatcher.open(job, call, endpoint=endpoint, pinned=pinned)
        return _streamed(stream, chat=chat)
    whole = await gateway.dispatcher.complete(job, call, endpoint=endpoint, pinned=pinned)
    return _whole(whole, chat=chat)


def _streamed(stream: Stream, *, chat: bool) -> Response:
    headers = front.raw_answered(stream.neuron, stream.cached_tokens)
    return Streamed(_ndjson(stream, chat=chat), media_type=wire.NDJSON, headers=headers)


def _whole(whole: Whole, *, chat: bool) -> Response:
    answer = whole.completion
    end = _ending(answer.stats, answer.done_reason)
    stamp = datetime.now(UTC)
    body = wire.answer(whole.model, answer.text, chat=chat, created_at=stamp, end=end)
    return front.Answer(dumps_bytes(body), front.raw_answered(whole.neuron, whole.cached_tokens))


async def _ndjson(stream: Stream, *, chat: bool) -> AsyncIterator[bytes]:
    """The answer's lines: those with text alone (all but the last) written straight to
    bytes (:class:`~ganglion.wire.ollama.TextLines`, once the first line is out), the last
    with the metrics."""
    try:
        first = stream.first
        yield wire.line(_reply(stream.model, first.text, first, chat=chat)).encode()
        if first.done:
            return
        lines = wire.TextLines(stream.model, chat=chat)
        async for chunk in stream:
            if chunk.done:
                yield wire.line(_reply(stream.model, chunk.text, chunk, chat=chat)).encode()
            else:
                yield lines.line(chunk.text, datetime.now(UTC))
    except BrokenMidStream as error:
        yield wire.line(wire.ErrorResponse(error=str(error))).encode()
    finally:
        await stream.aclose()


def _reply(model: str, text: str, chunk: Chunk, *, chat: bool) -> wire.Answer:
    """One answer in Ollama's shape: ``text``, and if ``chunk`` is the last, the metrics."""
    end = _ending(chunk.stats, chunk.done_reason) if chunk.done else None
    return wire.answer(model, text, chat=chat, created_at=datetime.now(UTC), end=end)


def _ending(stats: TokenStats | None, done_reason: str | None) -> wire.Ending:
    """Ollama's end of an answer. For OpenAI-dialect neurons, which report no prefill, the
    time to first token stands in for ``prompt_eval_duration``."""
    reason = done_reason or "stop"
    if stats is None:
        return {"done": True, "done_reason": reason}
    decode = stats.decode_s
    if decode is None and stats.ttft_s is not None:
        decode = stats.wall_s - stats.ttft_s
    return wire.ending(
        reason,
        total_s=stats.wall_s,
        load_s=stats.load_s or 0.0,
        prompt_tokens=stats.prompt_tokens,
        prompt_s=stats.prefill_s if stats.prefill_s is not None else stats.ttft_s,
        eval_count=stats.output_tokens,
        eval_s=decode,
        cached_tokens=stats.cached_tokens,
    )


def _json(answer: wire.WireModel, headers: dict[str, str] | None = None) -> Response:
    return Response(answer.encode(), media_type="application/json", headers=headers)


def _now() -> str:
    return wire.timestamp(datetime.now(UTC))


def _int(value: object) -> int | None:
    """``num_predict`` as a token budget: Ollama's -1 (no limit) and junk mean none."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
