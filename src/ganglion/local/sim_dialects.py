"""The simulator's two dialects: the Ollama API and the OpenAI API, as routes over a Simulator.

Both speak the wire shapes the official ``ollama`` and ``openai`` Python clients parse:
Ollama streams NDJSON with a final ``done: true`` chunk carrying durations in nanoseconds;
OpenAI streams server-sent events ending in ``data: [DONE]``. Errors come back in the
caller's dialect. Every generation first draws its fault (``--fail-rate``: HTTP 500 before
any byte; ``--hang-rate``: no answer until the client gives up; ``--stall-rate``: a stream
that stops after ``--stall-after-tokens`` tokens, a hang to a caller that does not stream).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from datetime import timedelta
from itertools import count
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ganglion.local.schema_instance import instance_of
from ganglion.local.sim_engine import (
    EMBEDDING_DIM,
    JSON_OBJECT_ANSWER,
    Fault,
    Job,
    Simulator,
    Timings,
    count_tokens,
    embedding,
    filler,
    log_entry,
    text_pieces,
)

VERSION = "0.9.0-ganglion-sim"
"""What ``/api/version`` answers: an Ollama-like version, labelled as the simulator."""

CONTEXT_LENGTH = 8192
KEEP_LOADED = timedelta(days=3650)
"""A loaded model stays loaded: ``/api/ps`` shows it expiring ten years on."""

Endpoint = Callable[[Request], Awaitable[Response]]

PROMPT_LOGGED = 200
"""How much of the last message a log entry keeps."""

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


class BadRequest(Exception):
    """The request body is not what the endpoint takes; answered 400 in the caller's dialect."""


class HangResponse(Response):
    """Answer nothing at all, not even headers, until the client hangs up."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__()
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.sim.hanging += 1
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self.sim.hanging -= 1


async def read_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise BadRequest(f"invalid JSON body: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def guarded(handler: Endpoint, bad_request: Callable[[str], Response]) -> Endpoint:
    """``handler``, answering a :class:`BadRequest` it raises with ``bad_request(message)``."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as error:
            return bad_request(str(error))

    return endpoint


def note_model(request: Request, model: object) -> None:
    """Put the requested model into this request's log entry."""
    entry = log_entry(request.scope)
    if entry is not None and isinstance(model, str):
        entry["model"] = model


def note_prompt(request: Request, messages: list[Any]) -> None:
    """Put the start of the last message into this request's log entry, so a test can tell
    which work a neuron was asked for (and how many times)."""
    entry = log_entry(request.scope)
    if entry is not None and messages and isinstance(messages[-1], dict):
        entry["prompt"] = text_of(messages[-1].get("content"))[:PROMPT_LOGGED]


def output_for(sim: Simulator, limit: object, answer: str | None) -> tuple[list[str], str]:
    """The tokens to emit and the done reason: the ``answer`` (JSON text) to a
    structured-output request in full, else filler up to the client's length limit (or the
    default length)."""
    if answer is not None:
        return text_pieces(answer), "stop"
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return filler(limit), "length"
    return filler(sim.config.output_tokens), "stop"


def hangs(fault: Fault | None, streaming: bool) -> bool:
    """Whether to answer nothing at all: a hang, or a stall seen by a caller that does not
    stream (the tokens before the stall would never leave the server)."""
    return fault == "hang" or (fault == "stall" and not streaming)


def stall_point(sim: Simulator, fault: Fault | None) -> int | None:
    """How many tokens a stalling stream sends before it stops (None: it does not stall)."""
    return sim.config.stall_after_tokens if fault == "stall" else None


def text_of(content: object) -> str:
    """The text of a message's content: a string, or OpenAI's list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_tokens(texts: Iterable[str]) -> int:
    return max(1, sum(count_tokens(text) for text in texts))


def messages_tokens(messages: object) -> int:
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list")
    return prompt_tokens(text_of(m.get("content")) for m in messages if isinstance(m, dict))


async def collect(sim: Simulator, job: Job) -> str:
    parts: list[str] = []
    async with aclosing(sim.run(job)) as batches:
        async for batch in batches:
            parts.extend(batch)
    return "".join(parts)


def embed_inputs(value: object) -> list[str]:
    """Embedding inputs as texts: a string, a list of strings, or token-id lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    if isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    raise BadRequest("'input' must be a string or a list of strings")


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
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def guarded(self, handler: Endpoint) -> Endpoint:
        return guarded(handler, lambda message: self.error(400, message))

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running (ganglion sim: a simulated neuron)")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [self.model_card(name) for name in self.sim.models]})

    async def ps(self, request: Request) -> Response:
        models = []
        for name, since in sorted(self.sim.loaded.items()):
            card = self.model_card(name)
            card.pop("modified_at")
            models.append(
                card
                | {
                    "expires_at": (since + KEEP_LOADED).isoformat(),
                    "size_vram": card["size"],
                    "context_length": CONTEXT_LENGTH,
                }
            )
        return JSONResponse({"models": models})

    async def show(self, request: Request) -> Response:
        body = await read_body(request)
        requested = body.get("model") or body.get("name")
        note_model(request, requested)
        model = self.sim.resolve(requested)
        if model is None:
            return self.error(404, f"model '{requested}' not found")
        card = self.model_card(model)
        return JSONResponse(
            {
                "modelfile": f"# ganglion sim: {model} is simulated; its text is filler words",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": card["details"],
                "model_info": {
                    "general.architecture": "ganglion-sim",
                    "general.parameter_count": 0,
                    "ganglion-sim.context_length": CONTEXT_LENGTH,
                    "ganglion-sim.embedding_length": EMBEDDING_DIM,
                },
                "capabilities": ["completion", "embedding"],
                "modified_at": card["modified_at"],
            }
        )

    def model_card(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": "2024-01-01T00:00:00Z",
            "size": 1_000_000_000,
            "digest": _digest(name),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "ganglion-sim",
                "families": ["ganglion-sim"],
                "parameter_size": "0B",
                "quantization_level": "SIM",
            },
        }

    async def chat(self, request: Request) -> Response:
        body = await read_body(request)
        tokens = messages_tokens(body.get("messages", []))
        note_prompt(request, body.get("messages") or [])
        return await self.answer(request, body, tokens, chat=True)

    async def generate(self, request: Request) -> Response:
        body = await read_body(request)
        texts = [text_of(body.get("prompt", "")), text_of(body.get("system", ""))]
        return await self.answer(request, body, prompt_tokens(texts), chat=False)

    async def answer(
        self, request: Request, body: dict[str, Any], tokens: int, *, chat: bool
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
        answer = _ollama_answer(body.get("format"), self.sim.config.structured)
        pieces, reason = output_for(self.sim, options.get("num_predict"), answer)
        job = Job(model, tokens, pieces, reason, stall_point(self.sim, fault))
        name = str(body["model"])
        if streaming:
            return StreamingResponse(self.stream(job, name, chat), media_type=NDJSON)
        text = await collect(self.sim, job)
        return JSONResponse(self.chunk(name, text, chat) | self.final(job))

    async def stream(self, job: Job, name: str, chat: bool) -> AsyncIterator[str]:
        async with aclosing(self.sim.run(job)) as batches:
            async for batch in batches:
                yield "".join(_line(self.chunk(name, piece, chat)) for piece in batch)
        yield _line(self.chunk(name, "", chat) | self.final(job))

    def chunk(self, name: str, text: str, chat: bool) -> dict[str, Any]:
        created = self.sim.wall().isoformat().replace("+00:00", "Z")
        content = (
            {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        )
        return {"model": name, "created_at": created, **content, "done": False}

    @staticmethod
    def final(job: Job) -> dict[str, Any]:
        timings = job.timings or Timings()
        return {"done": True, "done_reason": job.done_reason, **timings.ollama()}

    async def embed(self, request: Request) -> Response:
        body = await read_body(request)
        inputs = embed_inputs(body.get("input", ""))
        found = await self.embedding_model(request, body)
        if isinstance(found, Response):
            return found
        durations = (await self.sim.warm(found, prompt_tokens(inputs))).ollama()
        vectors = [embedding(found, text) for text in inputs]
        keep = ("total_duration", "load_duration", "prompt_eval_count")
        return JSONResponse(
            {"model": body["model"], "embeddings": vectors} | {k: durations[k] for k in keep}
        )

    async def embeddings(self, request: Request) -> Response:
        body = await read_body(request)
        found = await self.embedding_model(request, body)
        if isinstance(found, Response):
            return found
        text = text_of(body.get("prompt", ""))
        await self.sim.warm(found, prompt_tokens([text]))
        return JSONResponse({"embedding": embedding(found, text)})

    async def embedding_model(self, request: Request, body: dict[str, Any]) -> str | Response:
        note_model(request, body.get("model"))
        model = self.sim.resolve(body.get("model"))
        return model or self.error(404, f"model '{body.get('model')}' not found")


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
    def error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status)

    def not_found(self, model: object) -> JSONResponse:
        message = f"The model '{model}' does not exist or is not served by this simulator"
        return self.error(404, message, "invalid_request_error", "model_not_found")

    def guarded(self, handler: Endpoint) -> Endpoint:
        return guarded(handler, lambda message: self.error(400, message, "invalid_request_error"))

    def model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 1704067200, "owned_by": "ganglion-sim"}

    async def models(self, request: Request) -> Response:
        data = [self.model_object(name) for name in self.sim.models]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        requested = request.path_params["model"]
        note_model(request, requested)
        name = self.sim.resolve(requested)
        return self.not_found(requested) if name is None else JSONResponse(self.model_object(name))

    async def chat(self, request: Request) -> Response:
        body = await read_body(request)
        tokens = messages_tokens(body.get("messages", []))
        note_prompt(request, body.get("messages") or [])
        return await self.answer(request, body, tokens, chat=True)

    async def completions(self, request: Request) -> Response:
        body = await read_body(request)
        prompt = body.get("prompt", "")
        texts = [prompt] if isinstance(prompt, str) else embed_inputs(prompt)
        return await self.answer(request, body, prompt_tokens(texts), chat=False)

    async def answer(
        self, request: Request, body: dict[str, Any], tokens: int, *, chat: bool
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
        pieces, reason = output_for(
            self.sim, limit, _openai_answer(body.get("response_format"), self.sim.config.structured)
        )
        job = Job(model, tokens, pieces, reason, stall_point(self.sim, fault))
        reply = _Reply(
            reply_id=f"{'chatcmpl' if chat else 'cmpl'}-sim{next(self.ids)}",
            created=int(self.sim.wall().timestamp()),
            model=str(body["model"]),
            chat=chat,
        )
        if streaming:
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self.stream(job, reply, usage), media_type=SSE)
        text = await collect(self.sim, job)
        return JSONResponse(reply.whole(text, job))

    async def stream(self, job: Job, reply: _Reply, usage: bool) -> AsyncIterator[str]:
        extra = {"usage": None} if usage else {}
        if reply.chat:
            yield _event(reply.chunk({"role": "assistant", "content": ""}, None) | extra)
        async with aclosing(self.sim.run(job)) as batches:
            async for batch in batches:
                yield "".join(_event(reply.piece(piece) | extra) for piece in batch)
        yield _event(reply.piece("", job.done_reason) | extra)
        if usage:
            yield _event(reply.chunk(None, None) | {"choices": [], "usage": _usage(job)})
        yield "data: [DONE]\n\n"

    async def embeddings(self, request: Request) -> Response:
        body = await read_body(request)
        inputs = embed_inputs(body.get("input", ""))
        note_model(request, body.get("model"))
        model = self.sim.resolve(body.get("model"))
        if model is None:
            return self.not_found(body.get("model"))
        timings = await self.sim.warm(model, prompt_tokens(inputs))
        encode = _base64 if body.get("encoding_format") == "base64" else _floats
        data = [
            {"object": "embedding", "index": i, "embedding": encode(embedding(model, text))}
            for i, text in enumerate(inputs)
        ]
        usage = {"prompt_tokens": timings.prompt_tokens, "total_tokens": timings.prompt_tokens}
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )


class _Reply:
    """The envelope of one OpenAI completion: its id, timestamp, model and kind."""

    def __init__(self, *, reply_id: str, created: int, model: str, chat: bool) -> None:
        self.id, self.created, self.model, self.chat = reply_id, created, model, chat

    def envelope(self, stream: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if self.chat else None
        return {
            "id": self.id,
            "object": kind or "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "ganglion-sim",
        }

    def chunk(self, delta: dict[str, Any] | None, reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": reason}
        return self.envelope(stream=True) | {"choices": [choice]}

    def piece(self, text: str, reason: str | None = None) -> dict[str, Any]:
        if self.chat:
            return self.chunk({"content": text} if text else {}, reason)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return self.envelope(stream=True) | {"choices": [choice]}

    def whole(self, text: str, job: Job) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {"index": 0, "message": message}
        else:
            choice = {"index": 0, "text": text}
        choice |= {"logprobs": None, "finish_reason": job.done_reason}
        return self.envelope(stream=False) | {"choices": [choice], "usage": _usage(job)}


def _ollama_answer(format_: object, scripted: str | None = None) -> str | None:
    """The JSON text to answer an Ollama ``format`` with, or None for free text.
    ``scripted`` (``--structured-reply``) answers every schema request when given."""
    if format_ == "json" or (isinstance(format_, dict) and format_):
        if scripted is not None:
            return scripted
        return json.dumps(instance_of(format_) if isinstance(format_, dict) else JSON_OBJECT_ANSWER)
    return None


def _openai_answer(response_format: object, scripted: str | None = None) -> str | None:
    """The JSON text to answer an OpenAI ``response_format`` with, or None for text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    if scripted is not None:
        return scripted
    spec = response_format.get("json_schema") if kind == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return json.dumps(instance_of(schema) if isinstance(schema, dict) else JSON_OBJECT_ANSWER)


def _usage(job: Job) -> dict[str, int]:
    timings = job.timings or Timings()
    prompt, completion = timings.prompt_tokens, timings.eval_count
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _floats(vector: list[float]) -> list[float]:
    return vector


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _digest(name: str) -> str:
    return hashlib.sha256(f"ganglion-sim:{name}".encode()).hexdigest()


def _line(chunk: dict[str, Any]) -> str:
    return json.dumps(chunk) + "\n"


def _event(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"
