"""A real ``ganglion sim`` process on loopback: its wall-clock rates, and the official clients.

The rate bar is 15% over a generation of at least two seconds, loose enough for a busy
two-core machine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from subprocess import CompletedProcess
from typing import Any

import httpx
import ollama
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Spawner


class Pet(BaseModel):
    kind: str
    age: int


class Person(BaseModel):
    name: str
    age: int
    pets: list[Pet]


async def stream_timing(url: str, tokens: int) -> dict[str, float]:
    """Stream ``tokens`` tokens from ``/api/generate``; when the first and last arrived."""
    body = {"model": "sim-model", "prompt": "count", "options": {"num_predict": tokens}}
    async with httpx.AsyncClient(timeout=30.0) as client:
        start = time.monotonic()
        first = 0.0
        async with client.stream("POST", f"{url}/api/generate", json=body) as response:
            async for line in response.aiter_lines():
                chunk = json.loads(line)
                if not first and chunk["response"]:
                    first = time.monotonic() - start
        final: dict[str, Any] = chunk
    return {
        "first_s": first,
        "total_s": time.monotonic() - start,
        "eval_count": final["eval_count"],
        "eval_s": final["eval_duration"] / 1e9,
    }


@pytest.mark.parametrize(("tps", "tokens"), [(90.0, 270), (5.5, 14)], ids=["90tps", "5.5tps"])
async def test_streams_at_the_configured_rate(spawn: Spawner, tps: float, tokens: int) -> None:
    sim = spawn.sim(tps)
    timing = await stream_timing(sim.url, tokens)
    expected_s = tokens / tps
    assert expected_s >= 2.0
    assert timing["total_s"] == pytest.approx(expected_s, rel=0.15)
    assert timing["first_s"] < expected_s / 4, "tokens must stream, not arrive all at the end"
    assert timing["eval_count"] == tokens
    assert timing["eval_count"] / timing["eval_s"] == pytest.approx(tps, rel=0.15)


def test_the_official_ollama_client(spawn: Spawner) -> None:
    sim = spawn.sim(90.0, model="fast", extra=("--model", "embedder", "--load-s", "0.2"))
    messages = [{"role": "user", "content": "hello there"}]
    with ollama.Client(host=sim.url) as client:
        assert client.ps().models == []
        chat = client.chat(model="fast", messages=messages, options={"num_predict": 5})
        streamed = list(client.chat(model="fast", messages=messages, stream=True))
        generated = client.generate(model="fast", prompt="go", options={"num_predict": 3})
        embedded = client.embed(model="embedder", input=["a", "b"])
        listed = client.list()
        running = client.ps()
        shown = client.show("fast")
        person = client.chat(model="fast", messages=messages, format=Person.model_json_schema())
        with pytest.raises(ollama.ResponseError) as missing:
            client.chat(model="nope", messages=messages)
    assert chat.message.content is not None
    assert chat.message.content.split()[0] == "[sim]"
    assert (chat.eval_count, chat.done_reason) == (5, "length")
    assert chat.load_duration is not None
    assert chat.load_duration >= 0.15e9
    assert streamed[-1].done
    assert len("".join(part.message.content or "" for part in streamed).split()) == 64
    assert len(generated.response.split()) == 3
    assert [len(vector) for vector in embedded.embeddings] == [16, 16]
    assert [model.model for model in listed.models] == ["fast:latest", "embedder:latest"]
    assert {model.model for model in running.models} == {"fast:latest", "embedder:latest"}
    assert shown.capabilities is not None
    assert "completion" in shown.capabilities
    assert person.message.content is not None
    Person.model_validate_json(person.message.content)
    assert missing.value.status_code == 404


def test_the_official_openai_client(spawn: Spawner) -> None:
    sim = spawn.sim(90.0, model="fast")
    messages: list[Any] = [{"role": "user", "content": "hello there"}]
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0) as client:
        chat = client.chat.completions.create(model="fast", messages=messages, max_tokens=6)
        chunks = list(
            client.chat.completions.create(
                model="fast",
                messages=messages,
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        completion = client.completions.create(model="fast", prompt="once upon", max_tokens=3)
        floats = client.embeddings.create(model="fast", input="a", encoding_format="float")
        packed = client.embeddings.create(model="fast", input=["a", "b"])
        models = client.models.list()
        person = client.chat.completions.parse(
            model="fast", messages=messages, response_format=Person
        )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=messages)
    assert chat.choices[0].message.content is not None
    assert len(chat.choices[0].message.content.split()) == 6
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 4
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert len(completion.choices[0].text.split()) == 3
    assert len(floats.data[0].embedding) == 16
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert [model.id for model in models.data] == ["fast:latest"]
    assert isinstance(person.choices[0].message.parsed, Person)


async def test_a_client_that_hangs_up_frees_its_slot(spawn: Spawner) -> None:
    sim = spawn.sim(10.0)
    body = {"model": "sim-model", "prompt": "go", "options": {"num_predict": 500}}
    async with httpx.AsyncClient(base_url=sim.url, timeout=10.0) as client:
        async with client.stream("POST", "/api/generate", json=body) as response:
            async for _ in response.aiter_lines():
                break
        for _ in range(50):
            stats = (await client.get("/sim/stats")).json()
            if stats["in_flight"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (stats["in_flight"], stats["active"], stats["decoding"]) == (0, 0, 0)
        quick = {"model": "sim-model", "options": {"num_predict": 2}, "stream": False}
        started = time.monotonic()
        assert (await client.post("/api/generate", json=quick)).json()["eval_count"] == 2
        assert time.monotonic() - started < 5


async def test_a_stalled_stream_sends_its_first_tokens_then_nothing_until_the_client_leaves(
    spawn: Spawner,
) -> None:
    sim = spawn.sim(50.0, extra=("--stall-rate", "1", "--stall-after-tokens", "3"))
    body = {"model": "sim-model", "prompt": "go", "options": {"num_predict": 20}}
    async with httpx.AsyncClient(base_url=sim.url, timeout=10.0) as client:
        async with client.stream("POST", "/api/generate", json=body) as response:
            lines = response.aiter_lines()
            first = [json.loads(await anext(lines)) for _ in range(3)]
            more = asyncio.ensure_future(anext(lines))
            await asyncio.wait({more}, timeout=1.5)
            during = (await client.get("/sim/stats")).json()
            assert not more.done()
            more.cancel()
        for _ in range(50):
            after = (await client.get("/sim/stats")).json()
            if after["in_flight"] == 0:
                break
            await asyncio.sleep(0.1)
    assert "".join(chunk["response"] for chunk in first) == "[sim] lorem ipsum"
    assert not any(chunk["done"] for chunk in first)
    assert (during["stalled"], during["active"], during["totals"]["stalled"]) == (1, 1, 1)
    assert (after["stalled"], after["active"], after["in_flight"]) == (0, 0, 0)
    assert after["totals"]["completed"] == 0


def test_liveness_calls_leave_no_generation_in_the_log(spawn: Spawner) -> None:
    sim = spawn.sim(90.0)
    with httpx.Client(base_url=sim.url) as client:
        client.get("/api/version")
        client.get("/api/ps")
        client.get("/v1/models")
        log = client.get("/sim/log").json()
    assert {entry["path"] for entry in log} <= {"/api/version", "/api/ps", "/v1/models", "/sim/log"}


def test_start_line_names_the_url_and_rates(spawn: Spawner) -> None:
    sim = spawn.sim(12.5, extra=("--slots", "3", "--name", "cpu-box"))
    line = sim.log.read_text()
    assert f"{sim.url}" in line
    assert "cpu-box" in line
    assert "12.5 tok/s" in line
    assert "3 slots" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tps", "-5"], "--tps must be a positive"),
        (["--tps", "5", "--fail-rate", "1.5"], "--fail-rate must be a fraction"),
        (["--tps", "5", "--host", "0.0.0.0"], "--allow-public"),
    ],
    ids=["negative-tps", "fail-rate", "public-host"],
)
def test_bad_input_is_one_line_and_nonzero(
    cli: Callable[..., CompletedProcess[str]], args: list[str], message: str
) -> None:
    result = cli("sim", "--port", "0", "--model", "m", *args, env={"COLUMNS": "200"})
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_refused(cli: Callable[..., CompletedProcess[str]]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = cli("sim", "--port", port, "--model", "m", "--tps", "5", env={"COLUMNS": "200"})
    assert result.returncode != 0
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_teaches_each_flag(cli: Callable[..., CompletedProcess[str]]) -> None:
    result = cli("sim", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    for flag in ("--tps", "--slots", "--aggregate-tps", "--prefill-tps", "--load-s"):
        assert flag in result.stdout
    for flag in ("--fail-rate", "--hang-rate", "--seed", "--allow-public", "[sim]"):
        assert flag in result.stdout


async def test_a_hanging_request_holds_until_the_client_gives_up(spawn: Spawner) -> None:
    sim = spawn.sim(90.0, extra=("--hang-rate", "1"))
    async with httpx.AsyncClient(base_url=sim.url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/api/generate", json={"model": "sim-model"}, timeout=0.5)
        for _ in range(50):
            stats = (await client.get("/sim/stats")).json()
            if stats["hanging"] == 0:
                break
            await asyncio.sleep(0.1)
    assert stats["totals"]["hung"] == 1
    assert stats["hanging"] == 0


def test_one_process_serves_many_sims_on_consecutive_ports(spawn: Spawner) -> None:
    """``--count 3``: three neurons, each with its own name and log, on three ports."""
    sim = spawn.sim(200.0, model="fast", extra=("--count", "3", "--name", "box"))
    urls = [f"http://127.0.0.1:{sim.port + index}" for index in range(3)]
    names = [httpx.get(f"{url}/sim/stats", timeout=10).json()["name"] for url in urls]
    assert names == ["box-0", "box-1", "box-2"]
    body = {"model": "fast", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    assert httpx.post(f"{urls[1]}/api/generate", json=body, timeout=30).status_code == 200
    logged = [
        [entry["path"] for entry in httpx.get(f"{url}/sim/log", timeout=10).json()] for url in urls
    ]
    assert "/api/generate" in logged[1]
    assert "/api/generate" not in logged[0] + logged[2]
