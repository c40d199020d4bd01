"""The Ollama API for the whole fleet: what works against Ollama works against the gateway.

Requests are routed to the neuron that will finish first, whichever dialect it speaks; the
answer comes back in Ollama's shape (NDJSON when streaming), with Ollama's timing fields
passed through from Ollama neurons or computed from our measurements for OpenAI ones.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ganglion import __version__
from ganglion.dispatch import Stream
from ganglion.errors import BrokenMidStream
from ganglion.gateway import relay
from ganglion.gateway.state import GatewayDep
from ganglion.neurons.base import ChatRequest, Chunk, Dialect, GenerateRequest, TokenStats
from ganglion.routing import same_model
from ganglion.wire import ollama as wire

router = APIRouter(prefix="/api", tags=["ollama"])

OLLAMA_API_VERSION = "0.9.0"  # the Ollama API level the gateway speaks
NDJSON = "application/x-ndjson"


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_API_VERSION, "ganglion": __version__}


@router.get("/tags")
async def tags(gateway: GatewayDep) -> dict[str, list[dict[str, Any]]]:
    """Every model any active neuron serves, once."""
    seen: dict[str, dict[str, Any]] = {}
    for neuron in gateway.registry.neurons():
        if not neuron.is_active:
            continue
        for model in neuron.models:
            if not any(same_model(model, known) for known in seen):
                seen[model] = {
                    "name": model,
                    "model": model,
                    "modified_at": _now(),
                    "size": 0,
                    "digest": "",
                    "details": {"format": "", "family": "", "parameter_size": ""},
                }
    return {"models": list(seen.values())}


@router.get("/ps")
async def ps(gateway: GatewayDep) -> dict[str, list[dict[str, Any]]]:
    """Models loaded in memory now, across the fleet (from each neuron's ``/api/ps``)."""
    loaded = [
        {"name": model, "model": model, "size": 0, "size_vram": 0, "digest": "", "neuron": n.name}
        for n in gateway.registry.neurons()
        if n.is_active
        for model in n.loaded or []
    ]
    return {"models": loaded}


@router.post("/show")
async def show(body: wire.ShowRequest, gateway: GatewayDep) -> dict[str, Any]:
    model = body.model or body.name or ""
    if not gateway.router.serving(model):
        raise gateway.dispatcher.unavailable(model)
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": {"format": "", "family": "", "parameter_size": "", "quantization_level": ""},
        "model_info": {},
        "capabilities": ["completion"],
    }


@router.post("/chat", response_model=None)
async def chat(
    body: wire.ChatRequest, request: Request, gateway: GatewayDep
) -> StreamingResponse | JSONResponse:
    internal = ChatRequest(model=body.model, messages=body.messages, **_shared(body))
    job = relay.job(body.model, [m.get("content", "") for m in body.messages], internal.max_tokens)
    stream = await gateway.dispatcher.open(
        job, lambda a: a.chat_stream(internal), endpoint="chat", pinned=relay.pinned(request)
    )
    return await _answer(stream, body.stream, chat=True)


@router.post("/generate", response_model=None)
async def generate(
    body: wire.GenerateRequest, request: Request, gateway: GatewayDep
) -> StreamingResponse | JSONResponse:
    internal = GenerateRequest(model=body.model, prompt=body.prompt, **_shared(body))
    job = relay.job(body.model, [body.prompt], internal.max_tokens)
    stream = await gateway.dispatcher.open(
        job,
        lambda a: a.generate_stream(internal),
        endpoint="generate",
        pinned=relay.pinned(request),
    )
    return await _answer(stream, body.stream, chat=False)


@router.post("/embed")
async def embed(body: wire.EmbedRequest, request: Request, gateway: GatewayDep) -> JSONResponse:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    neuron, result = await relay.embed(gateway, body.model, inputs, relay.pinned(request))
    answer = {
        "model": body.model,
        "embeddings": result.vectors,
        "prompt_eval_count": result.prompt_tokens or 0,
    }
    return JSONResponse(answer, headers=relay.served_by(neuron))


@router.post("/embeddings")
async def embeddings(
    body: wire.LegacyEmbeddingsRequest, request: Request, gateway: GatewayDep
) -> JSONResponse:
    neuron, result = await relay.embed(gateway, body.model, [body.prompt], relay.pinned(request))
    return JSONResponse({"embedding": result.vectors[0]}, headers=relay.served_by(neuron))


def _shared(body: wire.ChatRequest | wire.GenerateRequest) -> dict[str, Any]:
    """The fields chat and generate share, split into what every dialect understands and
    what only an Ollama neuron should get (``keep_alive``, ``num_ctx``...)."""
    common, native_options = relay.split_options(dict(body.options))
    return {
        "max_tokens": _int(native_options.pop("num_predict", None)),
        "format": body.format or None,
        "options": common,
        "native": {**(body.model_extra or {}), "options": native_options},
        "native_dialect": Dialect.OLLAMA,
    }


async def _answer(
    stream: Stream, streaming: bool, *, chat: bool
) -> StreamingResponse | JSONResponse:
    headers = relay.served_by(stream.neuron)
    if streaming:
        return StreamingResponse(_ndjson(stream, chat=chat), media_type=NDJSON, headers=headers)
    try:
        text, last = await stream.collect()
    finally:
        await stream.aclose()
    body = _piece(stream.model, text, chat=chat) | _final(last)
    return JSONResponse(body, headers=headers)


async def _ndjson(stream: Stream, *, chat: bool) -> AsyncIterator[str]:
    try:
        yield _line(_piece(stream.model, stream.first.text, chat=chat) | _final(stream.first))
        if stream.first.done:
            return
        async for chunk in stream:
            yield _line(_piece(stream.model, chunk.text, chat=chat) | _final(chunk))
    except BrokenMidStream as error:
        yield _line({"error": str(error)})
    finally:
        await stream.aclose()


def _piece(model: str, text: str, *, chat: bool) -> dict[str, Any]:
    said = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
    return {"model": model, "created_at": _now(), **said, "done": False}


def _final(chunk: Chunk) -> dict[str, Any]:
    if not chunk.done:
        return {}
    return {"done": True, "done_reason": chunk.done_reason or "stop", **timings(chunk.stats)}


def timings(stats: TokenStats | None) -> dict[str, int]:
    """Ollama's timing fields (nanoseconds). For OpenAI-dialect neurons, which report no
    prefill, the time to first token stands in for ``prompt_eval_duration``."""
    if stats is None:
        return {}
    prefill = stats.prefill_s if stats.prefill_s is not None else stats.ttft_s
    decode = stats.decode_s
    if decode is None and stats.ttft_s is not None:
        decode = stats.wall_s - stats.ttft_s
    fields = {
        "total_duration": stats.wall_s,
        "load_duration": stats.load_s or 0.0,
        "prompt_eval_duration": prefill,
        "eval_duration": decode,
    }
    out = {key: int(value * 1e9) for key, value in fields.items() if value is not None}
    if stats.prompt_tokens is not None:
        out["prompt_eval_count"] = stats.prompt_tokens
    if stats.output_tokens is not None:
        out["eval_count"] = stats.output_tokens
    return out


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data) + "\n"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _int(value: object) -> int | None:
    """``num_predict`` as a token budget: Ollama's -1 (no limit) and junk mean none."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
