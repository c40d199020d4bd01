"""The simulator in-process, in virtual time: its timing model, dialects, faults and log."""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
import math
import random
import struct
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager, suppress
from typing import Any

import httpx
import pytest

from ganglion.errors import ConfigError
from ganglion.local.sim import SimConfig, create_sim_app
from ganglion.local.sim.answers import LABEL, filler, json_pieces
from ganglion.local.sim.engine import TICK_S, Generation, Simulator, common_prefix
from ganglion.local.sim.schema import instance_of

try:
    import jsonschema  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the venv
    jsonschema = None


class VirtualTime:
    """A clock that jumps: ``sleep`` waits until :meth:`drive` moves time to its deadline.

    The driver lets every runnable task settle, then advances to the earliest deadline, so
    concurrent requests interleave as they would in real time, in microseconds.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def drive(self) -> None:
        while True:
            for _ in range(50):
                await asyncio.sleep(0)
            if not self._timers:
                await asyncio.sleep(0.001)
                continue
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not future.done():
                future.set_result(None)


@pytest.fixture
async def vtime() -> AsyncIterator[VirtualTime]:
    time = VirtualTime()
    driver = asyncio.create_task(time.drive())
    yield time
    driver.cancel()
    with suppress(asyncio.CancelledError):
        await driver


@asynccontextmanager
async def sim_client(
    vtime: VirtualTime, seed: int = 1, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    defaults: dict[str, Any] = {"models": ("m1", "m2:7b"), "tps": 10.0}
    config = SimConfig(**(defaults | settings))
    app = create_sim_app(config, clock=vtime.clock, sleep=vtime.sleep, rng=random.Random(seed))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


def ollama_body(tokens: int | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m1", "prompt": "one two three four", "stream": False}
    if tokens is not None:
        body["options"] = {"num_predict": tokens}
    return body | extra


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def sse(response: httpx.Response) -> list[Any]:
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


# -- rates and lengths --------------------------------------------------------------------


async def test_generate_decodes_at_the_configured_rate(vtime: VirtualTime) -> None:
    async with sim_client(vtime, tps=10.0) as client:
        response = await client.post("/api/generate", json=ollama_body(50))
    body = response.json()
    assert response.status_code == 200
    assert body["done"] is True
    assert body["done_reason"] == "length"
    assert body["eval_count"] == 50
    assert body["eval_duration"] == pytest.approx(5e9, rel=1e-6)
    assert body["prompt_eval_count"] == 4
    assert body["prompt_eval_duration"] == pytest.approx(4 / 100 * 1e9, rel=1e-6)
    assert body["total_duration"] == pytest.approx(5.04e9, rel=1e-6)
    assert body["load_duration"] == 0
    words = body["response"].split()
    assert words[0] == LABEL
    assert len(words) == 50


async def test_high_rates_are_paced_in_batches(vtime: VirtualTime) -> None:
    async with sim_client(vtime, tps=90.0) as client:
        response = await client.post("/api/generate", json=ollama_body(180, stream=True))
    chunks = ndjson(response)
    assert len(chunks) == 181
    assert all(not chunk["done"] for chunk in chunks[:-1])
    final = chunks[-1]
    assert final["eval_count"] == 180
    assert final["eval_duration"] == pytest.approx(2e9, rel=0.01)
    assert final["eval_count"] / final["eval_duration"] * 1e9 == pytest.approx(90, rel=0.01)


async def test_the_first_token_comes_alone_as_soon_as_it_is_written(vtime: VirtualTime) -> None:
    """A server streams its first token the moment it is decoded (that is the time to first
    token); only the tokens after it come in batches a tick apart."""
    sim = Simulator(
        SimConfig(models=("m1",), tps=400.0, prefill_tps=1000.0),
        clock=vtime.clock,
        sleep=vtime.sleep,
        rng=random.Random(1),
    )
    job = Generation(model="m1:latest", prompt_tokens=100, pieces=filler(40))
    arrivals = []
    async with aclosing(sim.run(job)) as batches:
        async for batch in batches:
            arrivals.append((vtime.now, len(batch)))
    assert arrivals[0] == (pytest.approx(0.1 + 1 / 400), 1)  # prefill, then one token
    assert arrivals[1][1] == int(400 * TICK_S)
    assert sum(count for _, count in arrivals) == 40
    assert arrivals[-1][0] == pytest.approx(0.1 + 40 / 400)


async def test_default_length_and_stop_reason(vtime: VirtualTime) -> None:
    async with sim_client(vtime, output_tokens=64) as client:
        response = await client.post("/api/generate", json=ollama_body())
    assert response.json()["eval_count"] == 64
    assert response.json()["done_reason"] == "stop"


async def test_prefill_reads_the_prompt_at_its_rate(vtime: VirtualTime) -> None:
    prompt = " ".join(["word"] * 100)
    async with sim_client(vtime, tps=10.0, prefill_tps=50.0) as client:
        response = await client.post("/api/generate", json=ollama_body(1, prompt=prompt))
    assert response.json()["prompt_eval_count"] == 100
    assert response.json()["prompt_eval_duration"] == pytest.approx(2e9)


def turns(count: int, words: int) -> list[list[dict[str, str]]]:
    """A conversation's first ``count`` requests: each resends the turns before it, plus a
    user message of ``words`` words (and the answer it got, shortened to one word)."""
    said: list[dict[str, str]] = []
    requests = []
    for turn in range(count):
        said = [*said, {"role": "user", "content": f"turn{turn} " + "word " * (words - 1)}]
        requests.append(said)
        said = [*said, {"role": "assistant", "content": "answer"}]
    return requests


async def test_the_next_turn_reads_only_what_the_cache_does_not_hold(vtime: VirtualTime) -> None:
    first, second = turns(2, 100)
    async with sim_client(vtime, prefill_tps=100.0, cache_slots=1) as client:
        answers = [
            (await client.post("/api/chat", json={"model": "m1", "messages": m, "stream": False}))
            for m in (first, second)
        ]
        stats = (await client.get("/sim/stats")).json()
    one, two = (answer.json() for answer in answers)
    assert one["prompt_eval_count"] == 100
    assert "prompt_eval_cached_count" not in one  # nothing held yet: Ollama leaves it out
    assert one["prompt_eval_duration"] == pytest.approx(1e9)
    assert two["prompt_eval_count"] == 201  # the whole prompt, as Ollama counts it
    assert two["prompt_eval_cached_count"] == 100  # the first turn's prompt
    assert two["prompt_eval_duration"] == pytest.approx(1.01e9)  # 101 tokens read, not 201
    assert stats["totals"]["cached_tokens"] == 100


async def test_the_cache_holds_the_answer_too(vtime: VirtualTime) -> None:
    """The next turn repeats the answer the neuron wrote: the cache holds that as well (as
    llama.cpp's slots do), so only the new user message is read."""
    first = [{"role": "user", "content": "word " * 100}]
    async with sim_client(vtime, prefill_tps=100.0, cache_slots=1) as client:
        body = {"model": "m1", "messages": first, "stream": False, "options": {"num_predict": 8}}
        answer = (await client.post("/api/chat", json=body)).json()["message"]["content"]
        second = [*first, {"role": "assistant", "content": answer}]
        second.append({"role": "user", "content": "word " * 10})
        reply = (await client.post("/api/chat", json=body | {"messages": second})).json()
    assert len(answer.split()) == 8
    assert reply["prompt_eval_count"] == 118
    assert reply["prompt_eval_cached_count"] == 108  # the first prompt and its answer
    assert reply["prompt_eval_duration"] == pytest.approx(0.1e9)  # 10 tokens read


async def test_the_prompt_cache_evicts_the_least_recently_read(vtime: VirtualTime) -> None:
    """Two cache slots, three conversations: the third evicts the first one's prompt, so
    the first conversation's next turn reads everything again; the others' do not."""
    a, b, c = (turns(2, 50) for _ in range(3))
    for index, conversation in enumerate((a, b, c)):
        opening = conversation[0][0]  # the turns share their first message
        opening["content"] = f"conversation{index} {opening['content']}"
    async with sim_client(vtime, prefill_tps=100.0, cache_slots=2) as client:

        async def chat(messages: list[dict[str, str]]) -> dict[str, Any]:
            body = {"model": "m1", "messages": messages, "stream": False}
            return (await client.post("/v1/chat/completions", json=body)).json()["usage"]

        for conversation in (a, b, c):
            assert (await chat(conversation[0]))["prompt_tokens_details"]["cached_tokens"] == 0
        assert (await chat(c[1]))["prompt_tokens_details"]["cached_tokens"] == 51
        assert (await chat(b[1]))["prompt_tokens_details"]["cached_tokens"] == 51
        assert (await chat(a[1]))["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [("a b c d", "a b c d e", 4), ("a b c d e", "a b x d e", 2), ("", "a", 0), ("x y", "a", 0)],
)
def test_common_prefix(a: str, b: str, shared: int) -> None:
    assert common_prefix(a.split(), b.split()) == shared
    assert common_prefix(b.split(), a.split()) == shared


async def test_without_cache_slots_every_prompt_is_read_in_full(vtime: VirtualTime) -> None:
    first, second = turns(2, 100)
    async with sim_client(vtime, prefill_tps=100.0) as client:
        for messages in (first, second):
            body = {"model": "m1", "messages": messages, "stream": False}
            answer = (await client.post("/api/chat", json=body)).json()
        usage = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
    assert answer["prompt_eval_duration"] == pytest.approx(2.01e9)
    assert "prompt_eval_cached_count" not in answer
    assert "prompt_tokens_details" not in usage


async def test_model_loads_once_and_then_shows_in_ps(vtime: VirtualTime) -> None:
    async with sim_client(vtime, load_s=3.0) as client:
        assert (await client.get("/api/ps")).json() == {"models": []}
        first = (await client.post("/api/generate", json=ollama_body(1))).json()
        second = (await client.post("/api/generate", json=ollama_body(1))).json()
        loaded = (await client.get("/api/ps")).json()["models"]
    assert first["load_duration"] == pytest.approx(3e9)
    assert second["load_duration"] == 0
    assert [model["name"] for model in loaded] == ["m1:latest"]
    assert {"expires_at", "size_vram", "context_length", "digest"} <= set(loaded[0])


async def test_one_slot_queues_requests_first_come_first_served(vtime: VirtualTime) -> None:
    async with sim_client(vtime, tps=10.0, slots=1) as client:
        finished: list[int] = []

        async def ask(i: int) -> dict[str, Any]:
            await vtime.sleep(i * 0.01)
            body = (await client.post("/api/generate", json=ollama_body(10, prompt=""))).json()
            finished.append(i)
            return dict(body)

        results = await asyncio.gather(*(ask(i) for i in range(3)))
    assert finished == [0, 1, 2]
    for i, result in enumerate(results):
        assert result["eval_duration"] == pytest.approx(1e9, rel=1e-3)
        assert result["total_duration"] / 1e9 == pytest.approx(1.01 + i * 1.0, abs=0.02)


async def test_slots_share_the_aggregate_rate(vtime: VirtualTime) -> None:
    async with sim_client(vtime, tps=10.0, slots=2, aggregate_tps=10.0) as client:
        alone = (await client.post("/api/generate", json=ollama_body(20))).json()
        both = await asyncio.gather(
            *(client.post("/api/generate", json=ollama_body(20)) for _ in range(2))
        )
    assert alone["eval_duration"] == pytest.approx(2e9, rel=0.01)
    for response in both:
        assert response.json()["eval_duration"] == pytest.approx(4e9, rel=0.05)


async def test_slots_without_contention_run_in_parallel(vtime: VirtualTime) -> None:
    async with sim_client(vtime, tps=10.0, slots=2) as client:
        start = vtime.now
        both = await asyncio.gather(
            *(client.post("/api/generate", json=ollama_body(20)) for _ in range(2))
        )
    assert vtime.now - start == pytest.approx(2.04, abs=0.05)
    assert all(r.json()["eval_duration"] == pytest.approx(2e9, rel=0.01) for r in both)


async def test_stats_show_in_flight_work(vtime: VirtualTime) -> None:
    async with sim_client(vtime, tps=10.0, slots=1, name="gpu-box") as client:
        running = [
            asyncio.create_task(client.post("/api/generate", json=ollama_body(30)))
            for _ in range(2)
        ]
        while vtime.now < 1.0:
            await asyncio.sleep(0)
        during = (await client.get("/sim/stats")).json()
        await asyncio.gather(*running)
        after = (await client.get("/sim/stats")).json()
    assert during["name"] == "gpu-box"
    assert (during["in_flight"], during["active"], during["queued"]) == (2, 1, 1)
    assert during["config"]["aggregate_tps"] == 10.0
    assert during["config"]["prefill_tps"] == 100.0
    assert after["in_flight"] == 0
    assert after["totals"]["completed"] == 2
    assert after["totals"]["output_tokens"] == 60


async def test_abandoning_a_stream_frees_its_slot(vtime: VirtualTime) -> None:
    config = SimConfig(models=("m1",), tps=10.0)
    app = create_sim_app(config, clock=vtime.clock, sleep=vtime.sleep)
    sim: Simulator = app.state.sim
    job = Generation(model="m1:latest", prompt_tokens=1, pieces=filler(50))
    batches = sim.run(job)
    assert await anext(batches) == [LABEL]
    assert (sim.active, sim.decoding) == (1, 1)
    await batches.aclose()
    assert (sim.active, sim.decoding, sim.queued) == (0, 0, 0)
    assert job.timings is not None
    assert job.timings.eval_count == 1


# -- the Ollama dialect ---------------------------------------------------------------------


async def test_ollama_chat_streams_then_reports(vtime: VirtualTime) -> None:
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi there"}]}
    async with sim_client(vtime) as client:
        streamed = await client.post("/api/chat", json=body | {"options": {"num_predict": 5}})
        whole = await client.post("/api/chat", json=body | {"stream": False})
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    chunks = ndjson(streamed)
    assert [c["message"]["role"] for c in chunks] == ["assistant"] * 6
    assert "".join(c["message"]["content"] for c in chunks).split()[0] == LABEL
    assert chunks[-1]["done"] is True
    assert chunks[-1]["prompt_eval_count"] == 2
    assert isinstance(chunks[-1]["eval_duration"], int)
    message = whole.json()["message"]
    assert message["role"] == "assistant"
    assert len(message["content"].split()) == 64


async def test_ollama_catalog_endpoints(vtime: VirtualTime) -> None:
    async with sim_client(vtime) as client:
        version = (await client.get("/api/version")).json()
        tags = (await client.get("/api/tags")).json()
        show = await client.post("/api/show", json={"model": "m2:7b"})
        missing = await client.post("/api/show", json={"model": "nope"})
    assert "sim" in version["version"]
    assert [m["name"] for m in tags["models"]] == ["m1:latest", "m2:7b"]
    assert tags["models"][0]["details"]["family"] == "ganglion-sim"
    assert show.status_code == 200
    assert "completion" in show.json()["capabilities"]
    assert missing.status_code == 404


async def test_model_names_match_with_or_without_the_latest_tag(vtime: VirtualTime) -> None:
    async with sim_client(vtime) as client:
        for name in ("m1", "m1:latest"):
            response = await client.post("/api/generate", json=ollama_body(1, model=name))
            assert response.status_code == 200
            assert response.json()["model"] == name


async def test_unknown_model_is_404_in_each_dialect(vtime: VirtualTime) -> None:
    async with sim_client(vtime) as client:
        ollama = await client.post("/api/chat", json={"model": "x", "messages": []})
        openai = await client.post("/v1/chat/completions", json={"model": "x", "messages": []})
        embed = await client.post("/api/embed", json={"model": "x", "input": "a"})
    assert ollama.status_code == 404
    assert ollama.json() == {"error": "model 'x' not found"}
    assert openai.status_code == 404
    error = openai.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert "x" in error["message"]
    assert embed.status_code == 404


async def test_malformed_body_is_400(vtime: VirtualTime) -> None:
    async with sim_client(vtime) as client:
        ollama = await client.post("/api/generate", content=b"{not json")
        openai = await client.post("/v1/chat/completions", json={"model": "m1", "messages": 3})
    assert ollama.status_code == 400
    assert "error" in ollama.json()
    assert openai.status_code == 400
    assert "message" in openai.json()["error"]


async def test_ollama_embeddings_are_deterministic_unit_vectors(vtime: VirtualTime) -> None:
    async with sim_client(vtime) as client:
        embed = (await client.post("/api/embed", json={"model": "m1", "input": ["a", "b"]})).json()
        again = (await client.post("/api/embed", json={"model": "m1", "input": "a"})).json()
        legacy = (await client.post("/api/embeddings", json={"model": "m1", "prompt": "a"})).json()
    first, second = embed["embeddings"]
    assert len(first) == 16
    assert first != second
    assert again["embeddings"] == [first]
    assert legacy["embedding"] == first
    assert math.fsum(x * x for x in first) == pytest.approx(1.0)
    assert embed["prompt_eval_count"] == 2


# -- the OpenAI dialect ---------------------------------------------------------------------


async def test_openai_chat_completion_with_usage(vtime: VirtualTime) -> None:
    body = {"model": "m1", "messages": [{"role": "user", "content": "say hi"}], "max_tokens": 7}
    async with sim_client(vtime) as client:
        response = (await client.post("/v1/chat/completions", json=body)).json()
    assert response["object"] == "chat.completion"
    choice = response["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"].split()) == 7
    assert response["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}


async def test_openai_stream_ends_with_usage_and_done(vtime: VirtualTime) -> None:
    body = {
        "model": "m1",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a b c"}]}],
        "max_completion_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with sim_client(vtime) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert len(text.split()) == 4
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == 4
    assert events[-1]["usage"]["prompt_tokens"] == 3
    assert all(e["object"] == "chat.completion.chunk" for e in events)


async def test_openai_legacy_completions(vtime: VirtualTime) -> None:
    body = {"model": "m2:7b", "prompt": "once upon", "max_tokens": 3}
    async with sim_client(vtime) as client:
        whole = (await client.post("/v1/completions", json=body)).json()
        streamed = sse(await client.post("/v1/completions", json=body | {"stream": True}))
    assert whole["object"] == "text_completion"
    assert len(whole["choices"][0]["text"].split()) == 3
    assert whole["usage"]["prompt_tokens"] == 2
    assert "".join(e["choices"][0]["text"] for e in streamed) == whole["choices"][0]["text"]


async def test_openai_models_and_embeddings(vtime: VirtualTime) -> None:
    async with sim_client(vtime) as client:
        models = (await client.get("/v1/models")).json()
        one = await client.get("/v1/models/m2:7b")
        floats = (await client.post("/v1/embeddings", json={"model": "m1", "input": "a"})).json()
        encoded = (
            await client.post(
                "/v1/embeddings", json={"model": "m1", "input": ["a"], "encoding_format": "base64"}
            )
        ).json()
    assert [m["id"] for m in models["data"]] == ["m1:latest", "m2:7b"]
    assert one.json()["id"] == "m2:7b"
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 16
    decoded = struct.unpack("<16f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector, abs=1e-6)
    assert floats["usage"]["prompt_tokens"] == 1


# -- structured output ------------------------------------------------------------------------

PERSON: dict[str, Any] = {
    "$defs": {
        "Pet": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["cat", "dog"]},
                "age": {"type": "integer", "minimum": 3, "maximum": 20},
            },
            "required": ["kind", "age"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 40},
        "code": {"type": "string", "maxLength": 3},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "count": {"type": "integer", "exclusiveMaximum": 0},
        "alive": {"type": "boolean"},
        "nothing": {"type": "null"},
        "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "tag": {"oneOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
        "none": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}},
        "best": {"$ref": "#/$defs/Pet"},
        "when": {"type": "string", "format": "date-time"},
        "either": {"type": ["integer", "null"], "minimum": 2},
        "fixed": {"const": "exactly"},
    },
    "required": ["name", "score", "pets", "best", "fixed"],
    "additionalProperties": False,
}

TREE: dict[str, Any] = {
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
            "required": ["label", "children"],
        }
    },
    "$ref": "#/$defs/Node",
}


def assert_valid(instance: Any, schema: dict[str, Any]) -> None:
    if jsonschema is not None:
        jsonschema.validate(instance, schema)
        return
    _hand_check(instance, schema, schema)


def _hand_check(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """A check of the subset the generator claims, for when ``jsonschema`` is absent."""
    if "$ref" in schema:
        _hand_check(value, root["$defs"][schema["$ref"].rsplit("/", 1)[-1]], root)
        return
    if "const" in schema:
        assert value == schema["const"]
    if "enum" in schema:
        assert value in schema["enum"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            _hand_check(value, schema[key][0], root)
    _check_type(value, schema)
    if isinstance(value, dict):
        assert set(schema.get("required", [])) <= set(value)
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                _hand_check(value[name], sub, root)
    if isinstance(value, list):
        assert schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf)
        for item in value:
            _hand_check(item, schema.get("items", {}), root)
    _check_bounds(value, schema)


def _check_type(value: Any, schema: dict[str, Any]) -> None:
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    python: dict[str, type | tuple[type, ...]] = {"integer": int, "number": (int, float)}
    python |= {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    assert not kinds or any(isinstance(value, python[k]) for k in kinds), (value, kinds)


def _check_bounds(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, str):
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf)
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf)
        assert schema.get("exclusiveMinimum", -math.inf) < value
        assert value < schema.get("exclusiveMaximum", math.inf)


@pytest.mark.parametrize(
    "schema",
    [
        PERSON,
        TREE,
        {"type": "object", "properties": {"answer": {"type": "string"}}},
        {"type": "array", "items": {"type": "number", "minimum": 10}},
        {"type": "integer", "minimum": 7, "maximum": 7},
        {"type": "string", "minLength": 3, "maxLength": 5},
        {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
        {},
    ],
    ids=["person", "recursive", "plain", "array", "pinned", "bounded", "allOf", "empty"],
)
def test_schema_instances_are_valid(schema: dict[str, Any]) -> None:
    assert_valid(instance_of(schema), schema)


def test_json_tokens_rejoin_into_the_json() -> None:
    value = instance_of(PERSON)
    pieces = json_pieces(value)
    assert "".join(pieces) == json.dumps(value)
    assert len(pieces) > 20


async def test_ollama_format_schema_answers_a_valid_instance(vtime: VirtualTime) -> None:
    body = {
        "model": "m1",
        "messages": [{"role": "user", "content": "a person"}],
        "format": PERSON,
        "options": {"num_predict": 3},
    }
    async with sim_client(vtime) as client:
        whole = (await client.post("/api/chat", json=body | {"stream": False})).json()
        chunks = ndjson(await client.post("/api/chat", json=body))
        loose = await client.post("/api/generate", json=ollama_body(format="json"))
    answer = json.loads(whole["message"]["content"])
    assert_valid(answer, PERSON)
    assert whole["eval_count"] == len(json_pieces(answer))
    assert whole["done_reason"] == "stop"
    assert json.loads("".join(c["message"]["content"] for c in chunks)) == answer
    assert isinstance(json.loads(loose.json()["response"]), dict)


async def test_openai_response_format_answers_a_valid_instance(vtime: VirtualTime) -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    body = {"model": "m1", "messages": [{"role": "user", "content": "a person"}]}
    async with sim_client(vtime) as client:
        strict = await client.post(
            "/v1/chat/completions", json=body | {"response_format": schema_format}
        )
        loose = await client.post(
            "/v1/chat/completions", json=body | {"response_format": {"type": "json_object"}}
        )
    content = strict.json()["choices"][0]["message"]["content"]
    assert_valid(json.loads(content), PERSON)
    assert strict.json()["usage"]["completion_tokens"] == len(json_pieces(json.loads(content)))
    assert isinstance(json.loads(loose.json()["choices"][0]["message"]["content"]), dict)


# -- faults ---------------------------------------------------------------------------------


async def outcomes(vtime: VirtualTime, seed: int, requests: int, **settings: Any) -> list[int]:
    async with sim_client(vtime, seed=seed, **settings) as client:
        return [
            (await client.post("/api/generate", json=ollama_body(1))).status_code
            for _ in range(requests)
        ]


async def test_fail_rate_is_seeded_and_about_right(vtime: VirtualTime) -> None:
    first = await outcomes(vtime, 7, 200, fail_rate=0.25)
    again = await outcomes(vtime, 7, 200, fail_rate=0.25)
    other = await outcomes(vtime, 8, 200, fail_rate=0.25)
    assert first == again
    assert first != other
    assert set(first) == {200, 500}
    assert 30 <= first.count(500) <= 70


async def test_a_failure_answers_500_in_each_dialect(vtime: VirtualTime) -> None:
    async with sim_client(vtime, fail_rate=1.0) as client:
        ollama = await client.post("/api/generate", json=ollama_body(stream=True))
        openai = await client.post(
            "/v1/chat/completions", json={"model": "m1", "messages": [], "stream": True}
        )
        stats = (await client.get("/sim/stats")).json()
    assert ollama.status_code == 500
    assert "simulated failure" in ollama.json()["error"]
    assert openai.status_code == 500
    assert openai.json()["error"]["type"] == "server_error"
    assert stats["totals"]["failed"] == 2


async def test_a_hang_never_answers(vtime: VirtualTime) -> None:
    async with sim_client(vtime, hang_rate=1.0) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post("/api/generate", json=ollama_body(1)), 0.2)
        stats = (await client.get("/sim/stats")).json()
    assert stats["totals"]["hung"] == 1
    assert stats["hanging"] == 0


async def test_hang_rate_is_seeded(vtime: VirtualTime) -> None:
    async def run(seed: int) -> list[str]:
        async with sim_client(vtime, seed=seed, hang_rate=0.5) as client:

            async def one() -> str:
                try:
                    await asyncio.wait_for(client.post("/api/generate", json=ollama_body(1)), 0.15)
                except TimeoutError:
                    return "hang"
                return "ok"

            return [await one() for _ in range(8)]

    first = await run(3)
    assert first == await run(3)
    assert {"hang", "ok"} == set(first)


async def test_a_stall_sends_its_first_tokens_then_holds_its_slot_until_cancelled(
    vtime: VirtualTime,
) -> None:
    config = SimConfig(models=("m1",), tps=10.0, stall_rate=1.0, stall_after_tokens=3)
    sim: Simulator = create_sim_app(config, clock=vtime.clock, sleep=vtime.sleep).state.sim
    assert sim.draw_fault() == "stall"
    job = Generation(model="m1:latest", prompt_tokens=1, pieces=filler(20), stall_after=3)
    batches = sim.run(job)
    sent = [piece for _ in range(3) for piece in await anext(batches)]
    waiting = asyncio.ensure_future(anext(batches))
    await vtime.sleep(600.0)
    assert sent == filler(3)
    assert not waiting.done()
    assert (sim.stalled, sim.active, sim.stats()["in_flight"]) == (1, 1, 1)
    waiting.cancel()  # the client hung up
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (sim.stalled, sim.active, sim.decoding) == (0, 0, 0)
    assert (sim.totals.stalled, sim.totals.completed) == (1, 0)


async def test_a_stall_is_a_hang_to_a_caller_that_does_not_stream(vtime: VirtualTime) -> None:
    async with sim_client(vtime, stall_rate=1.0) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post("/api/generate", json=ollama_body(5)), 0.2)
        body = {"model": "m1", "messages": [], "stream": False}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post("/v1/chat/completions", json=body), 0.2)
        stats = (await client.get("/sim/stats")).json()
    assert stats["totals"]["stalled"] == 2
    assert stats["totals"]["completed"] == 0


# -- the request log --------------------------------------------------------------------------


async def test_the_log_records_every_request_with_its_model(vtime: VirtualTime) -> None:
    async with sim_client(vtime) as client:
        await client.get("/api/version")
        await client.get("/api/ps")
        await client.post("/api/generate", json=ollama_body(1, model="m2:7b"))
        await client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        await client.get("/no/such/path")
        log = (await client.get("/sim/log")).json()
    assert [(e["method"], e["path"], e["model"]) for e in log] == [
        ("GET", "/api/version", None),
        ("GET", "/api/ps", None),
        ("POST", "/api/generate", "m2:7b"),
        ("POST", "/v1/chat/completions", "nope"),
        ("GET", "/no/such/path", None),
        ("GET", "/sim/log", None),
    ]
    assert all(entry["time"].startswith("20") for entry in log)


# -- configuration ----------------------------------------------------------------------------

MINIMAL: dict[str, Any] = {"models": ("m",), "tps": 10.0}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tps": -1.0}, "--tps must be a positive"),
        ({"tps": 0.0}, "--tps must be a positive"),
        ({"fail_rate": 1.5}, "--fail-rate must be a fraction"),
        ({"fail_rate": 0.6, "hang_rate": 0.6}, "must not exceed 1"),
        ({"hang_rate": 0.5, "stall_rate": 0.6}, "must not exceed 1"),
        ({"stall_rate": -0.1}, "--stall-rate must be a fraction"),
        ({"stall_after_tokens": 0}, "--stall-after-tokens must be at least 1"),
        ({"slots": 0}, "--slots must be at least 1"),
        ({"cache_slots": -1}, "--cache-slots must be at least 0"),
        ({"models": ()}, "--model"),
        ({"host": "0.0.0.0"}, "--allow-public"),
        ({"load_s": -2.0}, "--load-s"),
    ],
)
def test_config_refuses_bad_values(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("-", "\\-")):
        SimConfig(**(MINIMAL | settings))


def test_config_defaults_and_public_hosts() -> None:
    config = SimConfig(models=("m",), tps=20.0, slots=3)
    assert config.aggregate_rate == 60.0
    assert config.prefill_rate == 200.0
    assert "20 tok/s" in config.describe()
    assert SimConfig(models=("m",), tps=1.0, host="0.0.0.0", allow_public=True).allow_public
    assert SimConfig(models=("m",), tps=1.0, host="::1").host == "::1"
    assert SimConfig(models=("m",), tps=1.0, host="localhost").host == "localhost"
