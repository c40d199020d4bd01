"""OpenAIAdapter against a fake llama.cpp / vLLM server (``httpx.MockTransport``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from ganglion.errors import (
    NeuronRequestError,
    NeuronStreamBroken,
    NeuronUnreachable,
    NotAnLLMServer,
)
from ganglion.neurons import ChatCall, Chunk, Dialect, GenerateCall
from ganglion.neurons.openai import OpenAIAdapter, response_format

URL = "http://cpu-box:8080"
MODEL = "qwen2.5-0.5b-instruct"
MODELS = {
    "object": "list",
    "data": [
        {
            "id": MODEL,
            "object": "model",
            "created": 1736500000,
            "owned_by": "llamacpp",
            "meta": {"n_ctx_train": 32768, "n_params": 494032768},
        }
    ],
}
USAGE = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
TIMINGS = {
    "prompt_n": 20,
    "prompt_ms": 40.0,
    "prompt_per_token_ms": 2.0,
    "prompt_per_second": 500.0,
    "predicted_n": 8,
    "predicted_ms": 160.0,
    "predicted_per_token_ms": 20.0,
    "predicted_per_second": 50.0,
}
MESSAGES = [{"role": "user", "content": "Hello"}]
QUIET = ChatCall(model=MODEL, messages=[])

Handler = Callable[[httpx.Request], httpx.Response]


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def completion(content: str, **extra: Any) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
    }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1736500001,
        "model": MODEL,
        "choices": [choice],
        **extra,
    }


def delta(content: str | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "model": MODEL, "choices": [choice], **extra}


def sse(*events: dict[str, Any] | str) -> list[str]:
    """Server-sent events as servers write them: ``data: ...`` then a blank line."""
    return [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]


async def drain(stream: AsyncIterator[Chunk], into: list[Chunk] | None = None) -> None:
    """Read a stream to its end (or its error), keeping the chunks in ``into``."""
    async for chunk in stream:
        if into is not None:
            into.append(chunk)


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


@pytest.fixture
async def make_adapter(
    clock: Callable[[], float], seen: list[httpx.Request]
) -> AsyncIterator[Callable[..., OpenAIAdapter]]:
    """``make_adapter(handler, url=URL)``: an adapter on a fake server; requests go in ``seen``."""
    adapters: list[OpenAIAdapter] = []

    def make(handler: Handler, url: str = URL) -> OpenAIAdapter:
        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        adapter = OpenAIAdapter(url, transport=httpx.MockTransport(record), clock=clock)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()


# --- probe and models -------------------------------------------------------------------


@pytest.mark.parametrize("url", [URL, f"{URL}/", f"{URL}/v1", f"{URL}/v1/", "cpu-box:8080"])
async def test_probe_uses_only_v1_models(make_adapter, clock, seen, url: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(0.003)
        return httpx.Response(200, json=MODELS)

    adapter = make_adapter(handler, url)
    result = await adapter.probe()

    assert adapter.url == URL
    assert [(r.method, str(r.url)) for r in seen] == [("GET", f"{URL}/v1/models")]
    assert result.dialect is Dialect.OPENAI
    assert result.models == [MODEL]
    assert result.loaded is None
    assert result.version is None
    assert result.latency_s == pytest.approx(0.003)


async def test_list_models_keeps_details(make_adapter) -> None:
    models = await make_adapter(lambda request: httpx.Response(200, json=MODELS)).list_models()
    assert models[0].name == MODEL
    assert models[0].details["owned_by"] == "llamacpp"
    assert models[0].details["meta"]["n_ctx_train"] == 32768


async def test_models_answer_that_is_not_a_list_is_not_an_llm_server(make_adapter) -> None:
    adapter = make_adapter(lambda request: httpx.Response(200, json={"models": []}))
    with pytest.raises(NotAnLLMServer, match="ModelList"):
        await adapter.probe()


async def test_no_v1_models_is_not_an_llm_server(make_adapter) -> None:
    adapter = make_adapter(lambda request: httpx.Response(404, text="404 page not found"))
    with pytest.raises(NotAnLLMServer, match="not an OpenAI-compatible server"):
        await adapter.probe()


# --- chat -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "expected"),
    [
        ("json", {"type": "json_object"}),
        (
            {"type": "object", "properties": {"n": {"type": "integer"}}},
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "output",
                    "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                    "strict": True,
                },
            },
        ),
    ],
)
def test_response_format(format: Any, expected: dict[str, Any]) -> None:
    assert response_format(format) == expected


def test_response_format_refuses_other_strings() -> None:
    with pytest.raises(ValueError, match="json"):
        response_format("yaml")


async def test_chat_sends_max_tokens_and_response_format(make_adapter, clock, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(0.25)
        return httpx.Response(200, json=completion('{"n": 4}', usage=USAGE))

    request = ChatCall(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=16,
        format={"type": "object"},
        options={"temperature": 0.2, "seed": 1, "stream": True},
    )
    result = await make_adapter(handler).chat(request)

    assert (seen[0].method, seen[0].url.path) == ("POST", "/v1/chat/completions")
    assert body_of(seen[0]) == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": False,
        "temperature": 0.2,
        "seed": 1,
        "max_tokens": 16,
        "response_format": response_format({"type": "object"}),
    }
    assert result.text == '{"n": 4}'
    assert result.done_reason == "stop"
    assert result.stats.prompt_tokens == 20
    assert result.stats.output_tokens == 8
    assert result.stats.wall_s == pytest.approx(0.25)
    # One wall time cannot be split into prefill and decode without the server's timings.
    assert result.stats.ttft_s is None
    assert result.stats.decode_s is None
    assert result.stats.prefill_s is None
    assert result.stats.load_s is None


async def test_chat_prefers_llama_cpp_timings(make_adapter, clock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(0.3)
        return httpx.Response(200, json=completion("hi", usage=USAGE, timings=TIMINGS))

    result = await make_adapter(handler).chat(ChatCall(model=MODEL, messages=MESSAGES))
    assert result.stats.prefill_s == pytest.approx(0.04)
    assert result.stats.decode_s == pytest.approx(0.16)
    assert result.stats.decode_tps == pytest.approx(50.0)
    assert result.stats.prefill_tps == pytest.approx(500.0)
    assert result.stats.wall_s == pytest.approx(0.3)


async def test_chat_stream_asks_for_usage_and_times_the_first_delta(
    make_adapter, timed_stream, seen
) -> None:
    role = {"object": "chat.completion.chunk", "choices": [{"delta": {"role": "assistant"}}]}
    usage = {"object": "chat.completion.chunk", "model": MODEL, "choices": [], "usage": USAGE}
    events = [
        ": keep-alive\n\n",
        *sse(role, delta("Hel"), delta("lo"), delta(None, finish="stop"), usage, "[DONE]"),
    ]
    pieces = list(zip([0.0, 0.4, 0.1, 0.2, 0.1, 0.0, 0.0], events, strict=True))

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, stream=timed_stream(pieces), headers=headers)

    request = ChatCall(model=MODEL, messages=MESSAGES, max_tokens=8)
    chunks = [chunk async for chunk in make_adapter(handler).chat_stream(request)]

    sent = body_of(seen[0])
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 8
    assert [chunk.text for chunk in chunks] == ["Hel", "lo", ""]
    last = chunks[-1]
    assert last.done
    assert last.done_reason == "stop"
    assert last.stats is not None
    assert last.stats.ttft_s == pytest.approx(0.5)
    assert last.stats.wall_s == pytest.approx(0.8)
    assert last.stats.decode_s == pytest.approx(0.3)  # wall - ttft
    assert last.stats.output_tokens == 8
    assert last.stats.prompt_tokens == 20
    assert last.stats.prefill_s is None


async def test_stream_without_usage_counts_deltas(make_adapter, timed_stream) -> None:
    events = sse(delta("a"), delta("b"), delta("c", finish="length"), "[DONE]")
    pieces = list(zip([0.1, 0.1, 0.1, 0.0], events, strict=True))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream(pieces))

    adapter = make_adapter(handler)
    chunks = [c async for c in adapter.chat_stream(QUIET)]
    stats = chunks[-1].stats
    assert stats is not None
    assert stats.output_tokens == 3
    assert stats.prompt_tokens is None
    assert chunks[-1].done_reason == "length"


async def test_stream_with_timings_in_last_chunk_uses_them(make_adapter, timed_stream) -> None:
    events = sse(delta("a"), delta("", finish="stop", timings=TIMINGS, usage=USAGE), "[DONE]")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream([(0.1, event) for event in events]))

    adapter = make_adapter(handler)
    chunks = [c async for c in adapter.chat_stream(QUIET)]
    stats = chunks[-1].stats
    assert stats is not None
    assert stats.decode_s == pytest.approx(0.16)
    assert stats.prefill_s == pytest.approx(0.04)
    assert stats.ttft_s == pytest.approx(0.1)


async def test_whole_answers_are_known_to_be_timed_once_an_answer_had_timings(
    make_adapter, timed_stream
) -> None:
    """vLLM sends no timings: a whole answer from it cannot say its decode time, so the
    gateway keeps streaming from it. llama.cpp's server sends them in every answer."""
    with_timings = True

    def handler(request: httpx.Request) -> httpx.Response:
        extra = {"timings": TIMINGS} if with_timings else {}
        if body_of(request)["stream"]:
            events = sse(delta("a"), delta("", finish="stop", usage=USAGE, **extra), "[DONE]")
            return httpx.Response(200, stream=timed_stream([(0.1, e) for e in events]))
        return httpx.Response(200, json=completion("hi", usage=USAGE, **extra))

    with_timings = False
    vllm = make_adapter(handler)
    await drain(vllm.chat_stream(QUIET))
    await vllm.chat(QUIET)
    assert vllm.times_whole_answers is False
    with_timings = True
    streamed_first = make_adapter(handler)
    await drain(streamed_first.chat_stream(QUIET))
    assert streamed_first.times_whole_answers is True
    whole_first = make_adapter(handler)
    await whole_first.chat(QUIET)
    assert whole_first.times_whole_answers is True


# --- completions and embeddings ---------------------------------------------------------


async def test_generate_uses_v1_completions(make_adapter, clock, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(0.5)
        choice = {"index": 0, "text": " Paris.", "finish_reason": "stop", "logprobs": None}
        reply = {"object": "text_completion", "model": MODEL, "choices": [choice], "usage": USAGE}
        return httpx.Response(200, json=reply)

    request = GenerateCall(model=MODEL, prompt="The capital of France is", max_tokens=4)
    result = await make_adapter(handler).generate(request)

    assert seen[0].url.path == "/v1/completions"
    assert body_of(seen[0]) == {
        "model": MODEL,
        "prompt": "The capital of France is",
        "stream": False,
        "max_tokens": 4,
    }
    assert result.text == " Paris."
    assert result.stats.output_tokens == 8


async def test_generate_stream_reads_text_chunks(make_adapter, timed_stream, seen) -> None:
    def text(piece: str) -> dict[str, Any]:
        return {"object": "text_completion", "choices": [{"index": 0, "text": piece}]}

    events = sse(text(" Par"), text("is"), "[DONE]")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream([(0.2, event) for event in events]))

    adapter = make_adapter(handler)
    chunks = [c async for c in adapter.generate_stream(GenerateCall(MODEL, "The capital"))]
    assert seen[0].url.path == "/v1/completions"
    assert body_of(seen[0])["stream_options"] == {"include_usage": True}
    assert "".join(chunk.text for chunk in chunks) == " Paris"
    assert chunks[-1].stats is not None
    assert chunks[-1].stats.ttft_s == pytest.approx(0.2)


async def test_embed_orders_vectors_by_index(make_adapter, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        reply = {
            "object": "list",
            "model": MODEL,
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
            ],
            "usage": {"prompt_tokens": 6, "total_tokens": 6},
        }
        return httpx.Response(200, json=reply)

    embeddings = await make_adapter(handler).embed(MODEL, ["a", "b"])
    assert seen[0].url.path == "/v1/embeddings"
    assert body_of(seen[0]) == {"model": MODEL, "input": ["a", "b"]}
    assert embeddings.vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert embeddings.prompt_tokens == 6


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (
            400,
            {"error": {"code": 400, "message": "the request exceeds the available context size"}},
            "exceeds the available context",
        ),
        (401, {"error": {"message": "Invalid API Key", "type": "authentication_error"}}, "API Key"),
        (
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            "field required",
        ),
        (503, "Service Unavailable", "Service Unavailable"),
    ],
)
async def test_error_status_carries_status_and_server_text(
    make_adapter, status: int, body: Any, says: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    with pytest.raises(NeuronRequestError) as caught:
        await make_adapter(handler).chat(ChatCall(model=MODEL, messages=MESSAGES))
    assert caught.value.status_code == status
    assert str(status) in str(caught.value)
    assert says in str(caught.value)


async def test_connection_refused_is_unreachable(make_adapter) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(NeuronUnreachable, match=r"cpu-box:8080/v1/chat/completions.*refused"):
        await make_adapter(handler).chat(ChatCall(model=MODEL, messages=MESSAGES))


async def test_stream_without_done_is_broken(make_adapter, timed_stream) -> None:
    events = sse(delta("a"), delta("b", finish="stop"))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream([(0.1, event) for event in events]))

    with pytest.raises(NeuronStreamBroken, match=r"\[DONE\]"):
        await drain(make_adapter(handler).chat_stream(QUIET))


async def test_stream_that_breaks_midway_is_broken(make_adapter, timed_stream) -> None:
    error = httpx.ReadError("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream([(0.1, sse(delta("a"))[0])], error))

    received: list[Chunk] = []
    with pytest.raises(NeuronStreamBroken, match="ReadError"):
        await drain(make_adapter(handler).chat_stream(QUIET), received)
    assert [chunk.text for chunk in received] == ["a"]


async def test_error_event_in_stream_is_broken(make_adapter, timed_stream) -> None:
    events = sse(delta("a"), {"error": {"message": "CUDA out of memory", "code": 500}})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream([(0.1, event) for event in events]))

    with pytest.raises(NeuronStreamBroken, match="CUDA out of memory"):
        await drain(make_adapter(handler).chat_stream(QUIET))


async def test_garbage_midway_in_a_stream_is_broken(make_adapter, timed_stream) -> None:
    events = [*sse(delta("a")), "data: {not json\n\n"]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream([(0.1, event) for event in events]))

    with pytest.raises(NeuronStreamBroken, match="not JSON"):
        await drain(make_adapter(handler).chat_stream(QUIET))


async def test_html_instead_of_a_stream_is_not_an_llm_server(make_adapter) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<!doctype html><title>Router login</title>")

    with pytest.raises(NotAnLLMServer):
        await drain(make_adapter(handler).chat_stream(QUIET))


async def test_completion_that_is_not_a_completion_is_not_an_llm_server(make_adapter) -> None:
    adapter = make_adapter(lambda request: httpx.Response(200, json={"status": "ok"}))
    with pytest.raises(NotAnLLMServer, match="ChatCompletion"):
        await adapter.chat(ChatCall(model=MODEL, messages=MESSAGES))


# --- llama-cpp-python's own spelling of a schema constraint ------------------------------

LLAMA_CPP_PYTHON_REFUSAL = {
    "error": {
        "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
        "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}",
        "type": "internal_server_error",
    }
}


def llama_cpp_python(timed_stream=None) -> Handler:
    """Refuses ``json_schema`` (with a 500, as it does); takes ``json_object`` + ``schema``."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        if body["response_format"]["type"] == "json_schema":
            return httpx.Response(500, json=LLAMA_CPP_PYTHON_REFUSAL)
        if body["stream"]:
            events = sse(delta('{"n": 4}'), delta(None, finish="stop"), "[DONE]")
            return httpx.Response(200, stream=timed_stream([(0.1, e) for e in events]))
        return httpx.Response(200, json=completion('{"n": 4}', usage=USAGE))

    return handler


async def test_a_refused_json_schema_is_resent_as_json_object_schema(make_adapter, seen) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = ChatCall(model=MODEL, messages=MESSAGES, format=schema)
    adapter = make_adapter(llama_cpp_python())

    first = await adapter.chat(request)
    second = await adapter.chat(request)

    assert first.text == second.text == '{"n": 4}'
    formats = [body_of(r)["response_format"] for r in seen]
    assert formats == [
        response_format(schema),
        {"type": "json_object", "schema": schema},
        {"type": "json_object", "schema": schema},  # remembered: no second refusal
    ]


async def test_a_refused_json_schema_stream_is_resent(make_adapter, timed_stream, seen) -> None:
    schema = {"type": "object"}
    request = ChatCall(model=MODEL, messages=MESSAGES, format=schema)
    chunks: list[Chunk] = []
    await drain(make_adapter(llama_cpp_python(timed_stream)).chat_stream(request), chunks)
    assert "".join(chunk.text for chunk in chunks) == '{"n": 4}'
    assert [body_of(r)["response_format"]["type"] for r in seen] == ["json_schema", "json_object"]


async def test_other_errors_are_not_resent(make_adapter, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "out of memory"}})

    request = ChatCall(model=MODEL, messages=MESSAGES, format={"type": "object"})
    with pytest.raises(NeuronRequestError, match="out of memory"):
        await make_adapter(handler).chat(request)
    assert len(seen) == 1


async def test_per_token_embeddings_are_refused(make_adapter) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        per_token = [[0.1, 0.2], [0.3, 0.4]]
        item = {"object": "embedding", "index": 0, "embedding": per_token}
        return httpx.Response(200, json={"object": "list", "model": MODEL, "data": [item]})

    with pytest.raises(NeuronRequestError, match="one vector per token"):
        await make_adapter(handler).embed(MODEL, ["hello world"])


def test_a_stream_that_arrives_in_one_burst_gives_no_decode_speed() -> None:
    from ganglion.neurons.openai import _stats

    starved = _stats(None, None, wall_s=2.0, ttft_s=1.999, deltas=64)
    assert starved.decode_s is None
    assert starved.decode_tps is None
    paced = _stats(None, None, wall_s=2.0, ttft_s=0.5, deltas=64)
    assert paced.decode_tps == 64 / 1.5
