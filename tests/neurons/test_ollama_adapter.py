"""OllamaAdapter against a fake Ollama (``httpx.MockTransport``) answering as Ollama does."""

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
from ganglion.neurons.ollama import OllamaAdapter

URL = "http://gpu-box:11434"
MODEL = "llama3.2:3b"
DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "3.2B",
    "quantization_level": "Q4_K_M",
}
TAGS = {
    "models": [
        {
            "name": MODEL,
            "model": MODEL,
            "modified_at": "2025-01-10T12:00:00.000000Z",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": DETAILS,
        },
        {"name": "qwen2.5:0.5b", "model": "qwen2.5:0.5b", "size": 397821319, "details": DETAILS},
    ]
}
PS = {
    "models": [
        {
            "name": MODEL,
            "model": MODEL,
            "size": 3619393189,
            "digest": "a80c4f17acd5",
            "details": DETAILS,
            "expires_at": "2025-01-10T12:05:00Z",
            "size_vram": 3619393189,
        }
    ]
}
METRICS = {
    "done": True,
    "done_reason": "stop",
    "total_duration": 4_900_000_000,
    "load_duration": 2_000_000_000,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 130_000_000,
    "eval_count": 10,
    "eval_duration": 250_000_000,
}
CREATED = "2025-01-10T12:00:01.000000Z"
QUIET = ChatCall(model=MODEL, messages=[])

Handler = Callable[[httpx.Request], httpx.Response]


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def ndjson(*objects: dict[str, Any]) -> list[str]:
    return [json.dumps(obj) + "\n" for obj in objects]


def chat_line(content: str, **extra: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"model": MODEL, "created_at": CREATED, "message": message, "done": False, **extra}


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
) -> AsyncIterator[Callable[[Handler], OllamaAdapter]]:
    """``make_adapter(handler)``: an adapter on a fake Ollama; every request lands in ``seen``."""
    adapters: list[OllamaAdapter] = []

    def make(handler: Handler) -> OllamaAdapter:
        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        adapter = OllamaAdapter(URL, transport=httpx.MockTransport(record), clock=clock)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()


# --- probe and models ------------------------------------------------------------------


def healthy(clock: Any) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(0.004)
        answers = {"/api/version": {"version": "0.5.7"}, "/api/tags": TAGS, "/api/ps": PS}
        return httpx.Response(200, json=answers[request.url.path])

    return handler


async def test_probe_uses_only_liveness_endpoints(make_adapter, clock, seen) -> None:
    result = await make_adapter(healthy(clock)).probe()

    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/api/version"),
        ("GET", "/api/tags"),
        ("GET", "/api/ps"),
    ]
    assert result.dialect is Dialect.OLLAMA
    assert result.version == "0.5.7"
    assert result.models == [MODEL, "qwen2.5:0.5b"]
    assert result.loaded == [MODEL]
    assert result.latency_s == pytest.approx(0.004)


async def test_probe_on_an_ollama_without_api_ps_reports_loaded_unknown(
    make_adapter, clock
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/ps":
            return httpx.Response(404, text="404 page not found")
        return healthy(clock)(request)

    result = await make_adapter(handler).probe()
    assert result.loaded is None
    assert result.models


async def test_a_probe_without_models_is_one_request_to_api_ps(make_adapter, clock, seen) -> None:
    result = await make_adapter(healthy(clock)).probe(models=False)

    assert [(r.method, r.url.path) for r in seen] == [("GET", "/api/ps")]
    assert (result.models, result.version) == (None, None)
    assert result.loaded == [MODEL]
    assert result.latency_s == pytest.approx(0.004)


async def test_a_probe_without_models_of_an_ollama_without_api_ps_asks_its_version(
    make_adapter, clock, seen
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/ps":
            return httpx.Response(404, text="404 page not found")
        return healthy(clock)(request)

    result = await make_adapter(handler).probe(models=False)
    assert [r.url.path for r in seen] == ["/api/ps", "/api/version"]
    assert (result.version, result.loaded, result.models) == ("0.5.7", None, None)


async def test_a_probe_without_models_of_a_server_that_is_not_ollama_fails(make_adapter) -> None:
    adapter = make_adapter(lambda request: httpx.Response(404, json={"detail": "Not Found"}))
    with pytest.raises(NotAnLLMServer, match="not an Ollama server"):
        await adapter.probe(models=False)


async def test_probe_of_a_server_without_api_version_is_not_ollama(make_adapter) -> None:
    adapter = make_adapter(lambda request: httpx.Response(404, json={"detail": "Not Found"}))
    with pytest.raises(NotAnLLMServer, match="not an Ollama server"):
        await adapter.probe()


async def test_version_that_is_not_ollama_json_is_not_an_llm_server(make_adapter) -> None:
    adapter = make_adapter(lambda request: httpx.Response(200, json={"name": "grafana"}))
    with pytest.raises(NotAnLLMServer, match="VersionResponse"):
        await adapter.probe()


async def test_list_models_from_tags(make_adapter, clock, seen) -> None:
    models = await make_adapter(healthy(clock)).list_models()
    assert [r.url.path for r in seen] == ["/api/tags"]
    assert models[0].name == MODEL
    assert models[0].size_bytes == 2019393189
    assert models[0].details["parameter_size"] == "3.2B"
    assert models[0].details["families"] == ["llama"]


# --- chat and generate ------------------------------------------------------------------


async def test_chat_sends_options_and_reads_token_stats(make_adapter, clock, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(4.95)
        reply = {"model": MODEL, "created_at": CREATED, **chat_line("Hi there!"), **METRICS}
        return httpx.Response(200, json=reply)

    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = ChatCall(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=32,
        format=schema,
        options={"temperature": 0, "seed": 7},
    )
    completion = await make_adapter(handler).chat(request)

    assert (seen[0].method, seen[0].url.path) == ("POST", "/api/chat")
    assert body_of(seen[0]) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": False,
        "format": schema,
        "options": {"temperature": 0, "seed": 7, "num_predict": 32},
    }
    assert completion.text == "Hi there!"
    assert completion.model == MODEL
    assert completion.done_reason == "stop"
    stats = completion.stats
    assert stats.prompt_tokens == 26
    assert stats.output_tokens == 10
    assert stats.prefill_s == pytest.approx(0.13)
    assert stats.decode_s == pytest.approx(0.25)
    assert stats.load_s == pytest.approx(2.0)
    assert stats.decode_tps == pytest.approx(40.0)
    assert stats.prefill_tps == pytest.approx(200.0)
    assert stats.ttft_s is None
    assert stats.wall_s == pytest.approx(4.95)


async def test_chat_without_options_sends_none(make_adapter, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**chat_line("ok"), **METRICS})

    await make_adapter(handler).chat(QUIET)
    assert body_of(seen[0]) == {"model": MODEL, "messages": [], "stream": False}


async def test_chat_stream_measures_ttft_at_first_content(make_adapter, timed_stream, seen) -> None:
    final = {**chat_line(""), **METRICS}
    lines = ndjson(chat_line(""), chat_line("Hel"), chat_line("lo"), chat_line("!"), final)
    pieces = list(zip([0.5, 0.3, 0.1, 0.1, 0.05], lines, strict=True))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=timed_stream(pieces), headers={"content-type": "application/x-ndjson"}
        )

    request = ChatCall(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    chunks = [chunk async for chunk in make_adapter(handler).chat_stream(request)]

    sent = body_of(seen[0])
    assert sent["stream"] is True
    assert sent["options"] == {"num_predict": 5}
    assert [chunk.text for chunk in chunks] == ["Hel", "lo", "!", ""]
    assert [chunk.done for chunk in chunks] == [False, False, False, True]
    last = chunks[-1]
    assert last.done_reason == "stop"
    assert last.stats is not None
    assert last.stats.ttft_s == pytest.approx(0.8)
    assert last.stats.wall_s == pytest.approx(1.05)
    assert last.stats.decode_s == pytest.approx(0.25)  # the server's eval_duration
    assert last.stats.output_tokens == 10
    assert last.stats.load_s == pytest.approx(2.0)


async def test_generate_posts_prompt_and_reads_response(make_adapter, clock, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(1.0)
        reply = {"model": MODEL, "created_at": CREATED, "response": "42", "context": [1, 2]}
        return httpx.Response(200, json={**reply, **METRICS})

    request = GenerateCall(model=MODEL, prompt="Answer:", max_tokens=3, format="json")
    completion = await make_adapter(handler).generate(request)

    assert seen[0].url.path == "/api/generate"
    assert body_of(seen[0]) == {
        "model": MODEL,
        "prompt": "Answer:",
        "stream": False,
        "format": "json",
        "options": {"num_predict": 3},
    }
    assert completion.text == "42"
    assert completion.stats.output_tokens == 10
    assert completion.stats.wall_s == pytest.approx(1.0)


async def test_generate_stream_yields_response_pieces(make_adapter, timed_stream) -> None:
    def line(text: str) -> dict[str, Any]:
        return {"model": MODEL, "created_at": CREATED, "response": text, "done": False}

    lines = ndjson(line("4"), line("2"), {**line(""), **METRICS, "done_reason": "length"})
    pieces = [(0.2, lines[0]), (0.1, lines[1]), (0.1, lines[2])]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream(pieces))

    adapter = make_adapter(handler)
    chunks = [c async for c in adapter.generate_stream(GenerateCall(MODEL, "Q"))]

    assert "".join(chunk.text for chunk in chunks) == "42"
    assert chunks[-1].done_reason == "length"
    assert chunks[-1].stats is not None
    assert chunks[-1].stats.ttft_s == pytest.approx(0.2)
    assert chunks[-1].stats.wall_s == pytest.approx(0.4)


async def test_embed_posts_inputs(make_adapter, seen) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        reply = {
            "model": "all-minilm",
            "embeddings": [[0.1, 0.2], [0.3, 0.4]],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": 8,
        }
        return httpx.Response(200, json=reply)

    embeddings = await make_adapter(handler).embed("all-minilm", ["a", "b"])

    assert seen[0].url.path == "/api/embed"
    assert body_of(seen[0]) == {"model": "all-minilm", "input": ["a", "b"]}
    assert embeddings.vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert embeddings.prompt_tokens == 8


# --- failures ---------------------------------------------------------------------------


async def test_error_status_carries_status_and_server_text(make_adapter) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "model 'nope' not found, try pulling it first"})

    with pytest.raises(NeuronRequestError) as caught:
        await make_adapter(handler).chat(ChatCall(model="nope", messages=[]))
    assert caught.value.status_code == 404
    assert "404" in str(caught.value)
    assert "model 'nope' not found" in str(caught.value)


async def test_error_status_on_a_stream_is_a_request_error(make_adapter) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": "llama runner process has terminated"})

    with pytest.raises(NeuronRequestError, match="llama runner") as caught:
        await drain(make_adapter(handler).chat_stream(QUIET))
    assert caught.value.status_code == 500


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.ReadTimeout("timed out"),
    ],
)
async def test_no_answer_is_unreachable(make_adapter, failure: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(NeuronUnreachable) as caught:
        await make_adapter(handler).probe()
    message = str(caught.value)
    assert f"{URL}/api/version" in message
    assert "running" in message


async def test_stream_without_done_message_is_broken(make_adapter, timed_stream) -> None:
    pieces = list(zip([0.1, 0.1], ndjson(chat_line("a"), chat_line("b")), strict=True))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream(pieces))

    received: list[Chunk] = []
    with pytest.raises(NeuronStreamBroken, match="done"):
        await drain(make_adapter(handler).chat_stream(QUIET), received)
    assert [chunk.text for chunk in received] == ["a", "b"]


async def test_stream_that_breaks_midway_is_broken(make_adapter, timed_stream) -> None:
    pieces = [(0.1, ndjson(chat_line("a"))[0])]
    error = httpx.RemoteProtocolError("peer closed connection without sending complete body")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream(pieces, error))

    with pytest.raises(NeuronStreamBroken, match="RemoteProtocolError"):
        await drain(make_adapter(handler).chat_stream(QUIET))


async def test_error_line_in_stream_is_broken(make_adapter, timed_stream) -> None:
    lines = ndjson(chat_line("a"), {"error": "an error was encountered while running the model"})
    pieces = [(0.1, line) for line in lines]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream(pieces))

    with pytest.raises(NeuronStreamBroken, match="error was encountered"):
        await drain(make_adapter(handler).chat_stream(QUIET))


async def test_non_json_answer_is_not_an_llm_server(make_adapter) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<html><body>Welcome to nginx!</body></html>")

    adapter = make_adapter(handler)
    with pytest.raises(NotAnLLMServer, match="not with JSON"):
        await adapter.chat(QUIET)
    with pytest.raises(NotAnLLMServer, match="not with JSON"):
        await drain(adapter.chat_stream(QUIET))


async def test_body_that_breaks_while_read_is_broken(make_adapter, timed_stream) -> None:
    error = httpx.ReadError("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=timed_stream([(0.1, '{"model": ')], error))

    with pytest.raises(NeuronStreamBroken, match="ReadError"):
        await make_adapter(handler).chat(QUIET)


# --- construction -----------------------------------------------------------------------


async def test_url_is_normalised() -> None:
    adapter = OllamaAdapter("gpu-box:11434/")
    try:
        assert adapter.url == "http://gpu-box:11434"
    finally:
        await adapter.aclose()


async def test_a_borrowed_client_is_left_open(clock) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=TAGS))
    async with httpx.AsyncClient(transport=transport) as client:
        adapter = OllamaAdapter(URL, client=client, clock=clock)
        await adapter.list_models()
        await adapter.aclose()
        assert not client.is_closed
        assert (await adapter.list_models())[0].name == MODEL
