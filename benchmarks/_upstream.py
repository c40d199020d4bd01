"""A fast fake neuron for ``overhead.py``: both dialects, streamed and whole, answered at once.

It is as cheap as an upstream can be in Python: one raw ASGI function on uvicorn with
httptools and uvloop, every answer a few preformatted bytes. It does no inference; it is the
"upstream directly" line that the gateway's cost is set against. An answer has as many
chunks as the request's token limit (``options.num_predict`` or ``max_tokens``; 16 when
unset), so that the cost of one chunk can be told from the cost of one request. Its OpenAI
answers carry ``timings`` as llama.cpp's server's do, so the gateway asks it for a whole
answer as one body where it can (a server without them, such as vLLM, is streamed from for
whole answers too: see docs/gateway.md, "Whole answers").

    python benchmarks/_upstream.py --port 18000
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn

MODEL = "fast:1b"
DEFAULT_CHUNKS = 16
WORD = "word "
JSON = [(b"content-type", b"application/json")]
NDJSON = [(b"content-type", b"application/x-ndjson")]
SSE = [(b"content-type", b"text/event-stream")]
STATS = {
    "total_duration": 2_000_000,
    "load_duration": 0,
    "prompt_eval_count": 8,
    "prompt_eval_duration": 500_000,
    "eval_duration": 1_000_000,
}
INFO: dict[str, Any] = {
    "/api/version": {"version": "0.12.0"},
    "/api/tags": {"models": [{"name": MODEL, "model": MODEL, "size": 1, "details": {}}]},
    "/api/ps": {"models": []},
    "/v1/models": {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0}]},
}


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def ollama(path: str, body: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    chunks = int((body.get("options") or {}).get("num_predict") or DEFAULT_CHUNKS)
    chat = path == "/api/chat"
    stamp = {"model": MODEL, "created_at": "2026-11-30T00:00:00Z"}

    def piece(text: str, done: bool) -> dict[str, Any]:
        said = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        end = {"done_reason": "stop", **STATS, "eval_count": chunks} if done else {}
        return {**stamp, **said, "done": done, **end}

    if body.get("stream", True) is False:
        return JSON, [_dump(piece(WORD * chunks, True))]
    lines = [_dump(piece(WORD, False)) + b"\n" for _ in range(chunks)]
    return NDJSON, [*lines, _dump(piece("", True)) + b"\n"]


def openai(path: str, body: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    chunks = int(body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_CHUNKS)
    chat = path == "/v1/chat/completions"
    usage = {"prompt_tokens": 8, "completion_tokens": chunks, "total_tokens": 8 + chunks}
    timings = {"prompt_n": 8, "prompt_ms": 0.5, "predicted_n": chunks, "predicted_ms": 1.0}
    head = {"id": "cmpl-1", "created": 0, "model": MODEL}

    def choice(text: str, finish: str | None, delta: bool) -> dict[str, Any]:
        said = {("delta" if delta else "message"): {"content": text}} if chat else {"text": text}
        return {"index": 0, **said, "finish_reason": finish}

    kind = "chat.completion" if chat else "text_completion"
    if not body.get("stream"):
        answer = {**head, "object": kind, "choices": [choice(WORD * chunks, "stop", False)]}
        return JSON, [_dump({**answer, "usage": usage, "timings": timings})]
    kind += ".chunk" if chat else ""
    events = [
        b"data: " + _dump({**head, "object": kind, "choices": [choice(WORD, None, True)]}) + b"\n\n"
        for _ in range(chunks)
    ]
    final = {**head, "object": kind, "choices": [choice("", "stop", True)], "timings": timings}
    tail = {**head, "object": kind, "choices": [], "usage": usage}
    events += [b"data: " + _dump(final) + b"\n\n", b"data: " + _dump(tail) + b"\n\n"]
    return SSE, [*events, b"data: [DONE]\n\n"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path in INFO:
        headers, parts = JSON, [_dump(INFO[path])]
    elif path == "/api/show":
        headers, parts = JSON, [_dump({"details": {}, "model_info": {}, "capabilities": []})]
    elif path.startswith("/api/"):
        headers, parts = ollama(path, json.loads(raw or b"{}"))
    elif path.startswith("/v1/"):
        headers, parts = openai(path, json.loads(raw or b"{}"))
    else:
        headers, parts = JSON, [b'{"error":"not found"}']
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for part in parts[:-1]:
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": parts[-1]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
