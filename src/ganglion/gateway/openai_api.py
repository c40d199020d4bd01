"""The OpenAI API for the whole fleet: ``/v1/models``, chat completions, completions and
embeddings, streamed as server-sent events with ``stream_options.include_usage``."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ganglion.dispatch import Stream
from ganglion.errors import BrokenMidStream
from ganglion.gateway import relay
from ganglion.gateway.state import GatewayDep
from ganglion.neurons.base import ChatRequest, Chunk, Dialect, GenerateRequest, TokenStats
from ganglion.routing import same_model
from ganglion.wire import openai as wire

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def models(gateway: GatewayDep) -> dict[str, Any]:
    names: list[str] = []
    for neuron in gateway.registry.neurons():
        if neuron.is_active:
            names += [m for m in neuron.models if not any(same_model(m, n) for n in names)]
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "ganglion"} for n in names]
    return {"object": "list", "data": data}


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: wire.ChatCompletionRequest, request: Request, gateway: GatewayDep
) -> StreamingResponse | JSONResponse:
    max_tokens = body.max_completion_tokens or body.max_tokens
    internal = ChatRequest(
        model=body.model, messages=body.messages, max_tokens=max_tokens, **_shared(body)
    )
    job = relay.job(body.model, [m.get("content", "") for m in body.messages], max_tokens)
    stream = await gateway.dispatcher.open(
        job, lambda a: a.chat_stream(internal), endpoint="chat", pinned=relay.pinned(request)
    )
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _answer(stream, body.stream, usage, kind="chat")


@router.post("/completions", response_model=None)
async def completions(
    body: wire.CompletionRequest, request: Request, gateway: GatewayDep
) -> StreamingResponse | JSONResponse:
    prompt = body.prompt if isinstance(body.prompt, str) else "".join(body.prompt)
    internal = GenerateRequest(
        model=body.model, prompt=prompt, max_tokens=body.max_tokens, **_shared(body)
    )
    job = relay.job(body.model, [prompt], body.max_tokens)
    stream = await gateway.dispatcher.open(
        job,
        lambda a: a.generate_stream(internal),
        endpoint="generate",
        pinned=relay.pinned(request),
    )
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _answer(stream, body.stream, usage, kind="text")


@router.post("/embeddings")
async def embeddings(
    body: wire.EmbeddingRequest, request: Request, gateway: GatewayDep
) -> JSONResponse:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    neuron, result = await relay.embed(gateway, body.model, inputs, relay.pinned(request))
    as_base64 = body.encoding_format == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": _b64(v) if as_base64 else v}
        for i, v in enumerate(result.vectors)
    ]
    tokens = result.prompt_tokens or 0
    answer = {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return JSONResponse(answer, headers=relay.served_by(neuron))


def _shared(body: wire.ChatCompletionRequest | wire.CompletionRequest) -> dict[str, Any]:
    """The fields both endpoints share: sampling options every dialect understands, and the
    caller's other fields, kept for a neuron that speaks OpenAI too."""
    extra = dict(body.model_extra or {})
    common = {k: extra.pop(k) for k in list(extra) if k in relay.COMMON_OPTIONS}
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
    stream: Stream, streaming: bool, usage: bool, *, kind: str
) -> StreamingResponse | JSONResponse:
    headers = relay.served_by(stream.neuron)
    ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    if streaming:
        events = _sse(stream, ident, usage, kind=kind)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        text, last = await stream.collect()
    finally:
        await stream.aclose()
    choice: dict[str, Any] = {"index": 0, "finish_reason": _finish(last), "logprobs": None}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    body = {
        **_envelope(ident, stream.model, kind, streaming=False),
        "choices": [choice],
        "usage": _usage(last.stats),
    }
    return JSONResponse(body, headers=headers)


async def _sse(stream: Stream, ident: str, usage: bool, *, kind: str) -> AsyncIterator[str]:
    envelope = _envelope(ident, stream.model, kind, streaming=True)
    try:
        first = True
        async for chunk in _chain(stream):
            choice: dict[str, Any] = {
                "index": 0,
                "finish_reason": _finish(chunk) if chunk.done else None,
            }
            if kind == "chat":
                choice["delta"] = {"content": chunk.text} | ({"role": "assistant"} if first else {})
            else:
                choice["text"] = chunk.text
            first = False
            yield _event(envelope | {"choices": [choice]})
            if chunk.done and usage:
                yield _event(envelope | {"choices": [], "usage": _usage(chunk.stats)})
        yield "data: [DONE]\n\n"
    except BrokenMidStream as error:
        yield _event({"error": {"message": str(error), "type": "server_error", "code": 502}})
    finally:
        await stream.aclose()


async def _chain(stream: Stream) -> AsyncIterator[Chunk]:
    yield stream.first
    if not stream.first.done:
        async for chunk in stream:
            yield chunk


def _envelope(ident: str, model: str, kind: str, *, streaming: bool) -> dict[str, Any]:
    if kind == "chat":
        obj = "chat.completion.chunk" if streaming else "chat.completion"
    else:
        obj = "text_completion"
    return {"id": ident, "object": obj, "created": int(time.time()), "model": model}


def _finish(chunk: Chunk) -> str:
    return "length" if chunk.done_reason == "length" else "stop"


def _usage(stats: TokenStats | None) -> dict[str, int]:
    prompt = (stats.prompt_tokens if stats else None) or 0
    output = (stats.output_tokens if stats else None) or 0
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
