"""The OpenAI adapter against a real llama-cpp-python server running SmolLM2-135M.

SmolLM2-135M's answers are weak: these tests check structure, plumbing and token
statistics, never what the model says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from ganglion.local.llama import LOCAL_MODEL, LlamaServer
from ganglion.neurons import ChatRequest, Chunk, Dialect, GenerateRequest, TokenStats
from ganglion.neurons.detect import detect_dialect
from ganglion.neurons.openai import OpenAIAdapter

pytestmark = pytest.mark.llama

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
    assert_plausible(stats)
    assert stats.ttft_s is not None
    assert 0 < stats.ttft_s < stats.wall_s
    assert stats.decode_tps is not None
    assert 1 <= stats.decode_tps <= 2000
    return stats


async def test_probe_lists_the_local_model(adapter: OpenAIAdapter) -> None:
    probe = await adapter.probe()
    assert probe.dialect is Dialect.OPENAI
    assert LOCAL_MODEL in probe.models
    assert probe.latency_s > 0


async def test_detect_dialect_says_openai(llama_server: LlamaServer) -> None:
    dialect, probe = await detect_dialect(llama_server.url)
    assert dialect is Dialect.OPENAI
    assert LOCAL_MODEL in probe.models


async def test_chat(adapter: OpenAIAdapter) -> None:
    request = ChatRequest(model=LOCAL_MODEL, messages=HELLO, max_tokens=MAX_TOKENS, options=GREEDY)
    completion = await adapter.chat(request)
    assert completion.text.strip()
    assert completion.done_reason in {"stop", "length"}
    assert_plausible(completion.stats)


async def test_chat_stream(adapter: OpenAIAdapter) -> None:
    request = ChatRequest(model=LOCAL_MODEL, messages=HELLO, max_tokens=MAX_TOKENS, options=GREEDY)
    chunks = [chunk async for chunk in adapter.chat_stream(request)]
    assert "".join(chunk.text for chunk in chunks).strip()
    assert_stream_plausible(chunks)


async def test_generate(adapter: OpenAIAdapter) -> None:
    request = GenerateRequest(
        model=LOCAL_MODEL, prompt="The sky is", max_tokens=MAX_TOKENS, options=GREEDY
    )
    completion = await adapter.generate(request)
    assert completion.text.strip()
    assert_plausible(completion.stats)


async def test_generate_stream(adapter: OpenAIAdapter) -> None:
    request = GenerateRequest(
        model=LOCAL_MODEL, prompt="One, two, three,", max_tokens=MAX_TOKENS, options=GREEDY
    )
    chunks = [chunk async for chunk in adapter.generate_stream(request)]
    assert "".join(chunk.text for chunk in chunks).strip()
    assert_stream_plausible(chunks)


async def test_chat_constrained_by_a_json_schema_parses_and_validates(
    adapter: OpenAIAdapter,
) -> None:
    question = "What is 2 + 2? Answer in JSON with the number and whether you are sure."
    request = ChatRequest(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        format=Answer.model_json_schema(),
        options=GREEDY,
    )
    completion = await adapter.chat(request)
    answer = Answer.model_validate_json(completion.text)
    assert isinstance(answer.answer, int)


async def test_chat_in_json_mode_is_json(adapter: OpenAIAdapter) -> None:
    request = ChatRequest(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a key named colour."}],
        max_tokens=48,
        format="json",
        options=GREEDY,
    )
    completion = await adapter.chat(request)
    assert completion.text.lstrip().startswith("{")


async def test_embed(adapter: OpenAIAdapter) -> None:
    embeddings = await adapter.embed(LOCAL_MODEL, ["hello world", "goodbye"])
    assert len(embeddings.vectors) == 2
    assert len(embeddings.vectors[0]) == len(embeddings.vectors[1]) > 0
    assert embeddings.vectors[0] != embeddings.vectors[1]
