"""The OpenAI API for the whole fleet: ``/v1/models``, chat completions, completions and
embeddings, streamed as server-sent events with ``stream_options.include_usage``."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ganglion.dispatch import Call, Stream, Whole
from ganglion.errors import BrokenMidStream
from ganglion.gateway import front
from ganglion.gateway.state import Gateway, GatewayDep
from ganglion.gateway.streamed import Streamed
from ganglion.neurons.base import ChatCall, Chunk, Dialect, GenerateCall, TokenStats
from ganglion.routing import Job, same_model
from ganglion.wire import openai as wire
from ganglion.wire import sse
from ganglion.wire.encoding import dumps_bytes

router = APIRouter(prefix="/v1", tags=["openai"])

# An answer's id: this process's own random prefix, then a count (unique without asking the
# system for random bytes once an answer).
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


@router.get("/models")
async def models(gateway: GatewayDep) -> Response:
    names: list[str] = []
    for neuron in gateway.registry.neurons():
        if neuron.is_active:
            names += [m for m in neuron.models if not any(same_model(m, n) for n in names)]
    data = [wire.Model(id=n, object="model", created=0, owned_by="ganglion") for n in names]
    return _json(wire.ModelList(object="list", data=data))


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: wire.ChatCompletionRequest, request: Request, gateway: GatewayDep
) -> Response:
    max_tokens = body.max_completion_tokens or body.max_tokens
    internal = ChatCall(
        model=body.model, messages=body.messages, max_tokens=max_tokens, **_shared(body)
    )
    job = front.chat_job(body.model, body.messages, max_tokens)
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _answer(gateway, request, job, internal, streaming=body.stream, usage=usage)


@router.post("/completions", response_model=None)
async def completions(
    body: wire.CompletionRequest, request: Request, gateway: GatewayDep
) -> Response:
    prompt = body.prompt if isinstance(body.prompt, str) else "".join(body.prompt)
    internal = GenerateCall(
        model=body.model, prompt=prompt, max_tokens=body.max_tokens, **_shared(body)
    )
    job = front.text_job(body.model, prompt, body.max_tokens)
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _answer(gateway, request, job, internal, streaming=body.stream, usage=usage)


@router.post("/embeddings")
async def embeddings(
    body: wire.EmbeddingRequest, request: Request, gateway: GatewayDep
) -> Response:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    neuron, result = await gateway.dispatcher.embed(
        front.job(body.model, inputs, 1), inputs, front.pinned(request)
    )
    data = [
        wire.Embedding(object="embedding", index=i, embedding=vector)
        for i, vector in enumerate(result.vectors)
    ]
    tokens = result.prompt_tokens or 0
    usage = wire.Usage(prompt_tokens=tokens, total_tokens=tokens)
    answer = wire.EmbeddingResponse(object="list", data=data, model=body.model, usage=usage)
    return Response(
        answer.encode(body.encoding_format),
        media_type="application/json",
        headers=front.served_by(neuron),
    )


def _shared(body: wire.ChatCompletionRequest | wire.CompletionRequest) -> dict[str, Any]:
    """The fields both endpoints share: sampling options every dialect understands, and the
    caller's other fields, kept for a neuron that speaks OpenAI too."""
    extra = dict(body.model_extra or {})
    common = {k: extra.pop(k) for k in list(extra) if k in front.COMMON_OPTIONS}
    return {
        "format": _format(body.response_format),
        "options": common,
        "native": extra,
        "native_dialect": Dialect.OPENAI,
    }


def _format(response_format: dict[str, Any] | None) -> str | dict[str, Any] | None:
    """OpenAI ``response_format`` as our dialect-free ``format``: a schema, or ``"json"``."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else "json"
    if kind == "json_object":
        schema = response_format.get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


async def _answer(
    gateway: Gateway, request: Request, job: Job, call: Call, *, streaming: bool, usage: bool
) -> Response:
    kind = "chat" if isinstance(call, ChatCall) else "text"
    endpoint, pinned = ("chat" if kind == "chat" else "generate"), front.pinned(request)
    if streaming:
        stream = await gateway.dispatcher.open(job, call, endpoint=endpoint, pinned=pinned)
        return _streamed(stream, usage, kind=kind)
    whole = await gateway.dispatcher.complete(job, call, endpoint=endpoint, pinned=pinned)
    return _whole(whole, kind=kind)


def _streamed(stream: Stream, usage: bool, *, kind: str) -> Response:
    headers = front.raw_answered(stream.neuron, stream.cached_tokens)
    reply = _reply(stream.model, usage, kind=kind)
    return Streamed(_events(stream, reply), media_type=sse.MEDIA_TYPE, headers=headers)


def _whole(whole: Whole, *, kind: str) -> Response:
    answer = whole.completion
    reply = _reply(whole.model, False, kind=kind)
    body = reply.whole(answer.text, _finish(answer.done_reason), _usage(answer.stats))
    return front.Answer(dumps_bytes(body), front.raw_answered(whole.neuron, whole.cached_tokens))


def _reply(model: str, usage: bool, *, kind: str) -> wire.Reply:
    chat = kind == "chat"
    return wire.Reply(
        id=f"{'chatcmpl' if chat else 'cmpl'}-{_ID_PREFIX}{next(_ids):012x}",
        created=int(time.time()),
        model=model,
        chat=chat,
        include_usage=usage,
    )


async def _events(stream: Stream, reply: wire.Reply) -> AsyncIterator[bytes]:
    """The answer's events: the first with the role, then one a token (text alone, written
    straight to bytes: :meth:`~ganglion.wire.openai.Reply.text_event`), the last with the
    finish, the usage when asked for, and ``[DONE]``."""
    try:
        last = stream.first
        yield _event(reply, last, "assistant")
        if not last.done:
            async for last in stream:
                yield _event(reply, last, None) if last.done else reply.text_event(last.text)
        if reply.include_usage:
            yield reply.event(reply.usage_chunk(_usage(last.stats))).encode()
        yield sse.DONE.encode()
    except BrokenMidStream as error:
        detail = wire.ErrorDetail(message=str(error), type="server_error", code=502)
        yield wire.ErrorResponse(error=detail).event().encode()
    finally:
        await stream.aclose()


def _event(reply: wire.Reply, chunk: Chunk, role: str | None) -> bytes:
    finish = _finish(chunk.done_reason) if chunk.done else None
    return reply.event(reply.chunk(chunk.text, finish, role=role)).encode()


def _finish(done_reason: str | None) -> str:
    return "length" if done_reason == "length" else "stop"


def _usage(stats: TokenStats | None) -> dict[str, Any]:
    if stats is None:
        return wire.usage(0, 0)
    return wire.usage(stats.prompt_tokens or 0, stats.output_tokens or 0, stats.cached_tokens)


def _json(answer: wire.WireModel, headers: dict[str, str] | None = None) -> Response:
    return Response(answer.encode(), media_type="application/json", headers=headers)
