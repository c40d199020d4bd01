"""The official ``ollama`` and ``openai`` clients against a real gateway process, in front
of a real llama.cpp neuron (OpenAI dialect) and simulated neurons (Ollama dialect)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import ollama
import openai
import pytest

from ganglion.local.llama import LOCAL_MODEL, LlamaServer
from tests.conftest import Proc, Spawner, need

SIM_MODEL = "llama3"
FAST_ENV = {"GANGLION_FIRST_BYTE_TIMEOUT_S": "2", "GANGLION_IDLE_TIMEOUT_S": "2"}


def add(gateway: Proc, url: str, name: str, **extra: object) -> None:
    response = httpx.post(f"{gateway.url}/fleet/neurons", json={"url": url, "name": name, **extra})
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Spawner]]:
    """A gateway with a real llama.cpp neuron and a 200 tok/s simulated one."""
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    tmp = tmp_path_factory.mktemp("compat")
    spawner = Spawner(tmp)
    llama = LlamaServer(log_dir=tmp)
    try:
        llama.start()
        gateway = spawner.gateway(f"sqlite:///{tmp / 'c.db'}", env=FAST_ENV)
        sim = spawner.sim(200, model=SIM_MODEL)
        add(gateway, llama.url, "llama")
        add(gateway, sim.url, "sim")
        # llama-cpp-python 0.3.x sometimes answers the first chat through a new connection
        # with an immediate stop (no tokens); one throwaway request keeps the tests about
        # our plumbing rather than that quirk.
        warm = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        httpx.post(f"{gateway.url}/api/chat", json=warm | {"stream": False}, timeout=120)
        yield gateway, spawner
    finally:
        spawner.close()
        llama.stop()


@pytest.fixture
def ollama_client(fleet: tuple[Proc, Spawner]) -> Iterator[ollama.Client]:
    with ollama.Client(host=fleet[0].url) as client:
        yield client


@pytest.fixture
def openai_client(fleet: tuple[Proc, Spawner]) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{fleet[0].url}/v1", api_key="unused")
    yield client
    client.close()


@pytest.mark.llama
@pytest.mark.parametrize("model", [LOCAL_MODEL, SIM_MODEL], ids=["cross-dialect", "same-dialect"])
def test_ollama_client(ollama_client: ollama.Client, model: str) -> None:
    chat = ollama_client.chat(
        model=model,
        messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        options={"num_predict": 8, "temperature": 0},
    )
    assert chat.done
    assert chat.message.content
    assert 0 < (chat.eval_count or 0) <= 8
    assert (chat.eval_duration or 0) > 0
    parts = list(
        ollama_client.chat(
            model=model,
            messages=[{"role": "user", "content": "Count to five."}],
            stream=True,
            options={"num_predict": 6},
        )
    )
    assert parts[-1].done
    assert not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts).strip()
    generated = ollama_client.generate(model=model, prompt="1, 2, 3,", options={"num_predict": 5})
    assert generated.response
    streamed = list(
        ollama_client.generate(model=model, prompt="a b c", stream=True, options={"num_predict": 4})
    )
    assert streamed[-1].done
    listed = {m.model for m in ollama_client.list().models}
    assert {LOCAL_MODEL, f"{SIM_MODEL}:latest"} <= listed


@pytest.mark.llama
@pytest.mark.parametrize("model", [LOCAL_MODEL, SIM_MODEL], ids=["same-dialect", "cross-dialect"])
def test_openai_client(openai_client: openai.OpenAI, model: str) -> None:
    chat = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.choices[0].message.content
    assert chat.usage is not None
    assert 0 < chat.usage.completion_tokens <= 8
    stream = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    completion = openai_client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=5)
    assert completion.choices[0].text
    assert {LOCAL_MODEL, f"{SIM_MODEL}:latest"} <= {m.id for m in openai_client.models.list()}


@pytest.mark.llama
def test_embeddings_where_the_neuron_supports_them(
    ollama_client: ollama.Client, openai_client: openai.OpenAI
) -> None:
    assert len(ollama_client.embed(model=SIM_MODEL, input=["a", "b"]).embeddings) == 2
    assert ollama_client.embeddings(model=SIM_MODEL, prompt="a").embedding
    assert (
        len(openai_client.embeddings.create(model=SIM_MODEL, input="hello").data[0].embedding) > 0
    )


@pytest.mark.llama
def test_json_schema_through_both_clients(
    ollama_client: ollama.Client, openai_client: openai.OpenAI
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for model in (LOCAL_MODEL, SIM_MODEL):
        reply = ollama_client.chat(
            model=model,
            messages=[{"role": "user", "content": "Give n=3 as JSON."}],
            format=schema,
            options={"num_predict": 40},
        )
        assert reply.message.content.strip().startswith("{")
        chat = openai_client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Give n=3 as JSON."}],
            max_tokens=40,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )
        assert (chat.choices[0].message.content or "").strip().startswith("{")


def test_failover_refused_hung_and_dead_neurons(spawn: Spawner, db_url: str) -> None:
    gateway = spawn.gateway(db_url, probe_interval=30, env=FAST_ENV)
    models = ("m-fail", "m-hang", "m-dead")
    healthy = spawn.sim(20, model=models[0], extra=("--model", models[1], "--model", models[2]))
    failing = spawn.sim(500, model="m-fail", extra=("--fail-rate", "1"))
    hanging = spawn.sim(400, model="m-hang", extra=("--hang-rate", "1"))
    dead = spawn.sim(300, model="m-dead")
    for name, proc in [
        ("healthy", healthy),
        ("failing", failing),
        ("hanging", hanging),
        ("dead", dead),
    ]:
        add(gateway, proc.url, name)
    dead.kill()
    with ollama.Client(host=gateway.url) as client:
        for model in models:
            # each broken neuron is faster on paper, so it is tried first
            reply = client.chat(
                model=model, messages=[{"role": "user", "content": "x"}], options={"num_predict": 3}
            )
            assert reply.done
            assert reply.message.content, model
    served = httpx.post(
        f"{gateway.url}/api/chat",
        json={"model": "m-hang", "messages": [], "stream": False, "options": {"num_predict": 2}},
        timeout=30,
    )
    assert served.headers["X-Ganglion-Neuron"] == "healthy"
    statuses = {n["name"]: n["status"] for n in httpx.get(f"{gateway.url}/fleet/neurons").json()}
    assert statuses["failing"] != "offline"  # failed requests are not death


def test_a_client_that_leaves_mid_answer_frees_its_neuron(spawn: Spawner, db_url: str) -> None:
    gateway = spawn.gateway(db_url, probe_interval=30)
    sim = spawn.sim(5, model="m")  # 200 tokens at 5 tok/s: 40 s, were the stream read out
    add(gateway, sim.url, "slowpoke")
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        with http.stream("POST", "/api/chat", json=body | {"options": {"num_predict": 200}}) as r:
            first = json.loads(next(r.iter_lines()))
            assert first["message"]["content"]
        deadline = time.monotonic() + 20
        while (busy := http.get("/fleet/neurons/slowpoke").json()["in_flight"]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert busy == 0  # the gateway closed the neuron's stream when its client left
        assert 'kind="stream_broken"' in http.get("/metrics").text


def test_death_mid_stream_is_an_error_not_a_hang(spawn: Spawner, db_url: str) -> None:
    gateway = spawn.gateway(db_url, probe_interval=30, env=FAST_ENV)
    sim = spawn.sim(10, model="m")
    add(gateway, sim.url, "doomed")
    client = ollama.Client(host=gateway.url, timeout=30)
    stream = client.chat(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        options={"num_predict": 100},
    )
    first = next(stream)
    assert first.message.content
    sim.kill()
    with pytest.raises(ollama.ResponseError, match="failed mid-answer"):
        list(stream)
    oa = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=30)
    spawn.sim(10, model="m", port=sim.port)
    events = oa.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_tokens=100, stream=True
    )
    next(iter(events))
    spawn.procs[-1].kill()
    with pytest.raises(openai.APIError, match="failed mid-answer"):
        list(events)
    oa.close()


def test_routing_by_finish_time_with_real_sims(spawn: Spawner, db_url: str) -> None:
    gateway = spawn.gateway(db_url, probe_interval=30, env={"GANGLION_MAX_QUEUE": "100"})
    fast = spawn.sim(90, model="m")
    slow = spawn.sim(5.5, model="m")
    add(gateway, fast.url, "fast", node="gpu")
    add(gateway, slow.url, "slow", node="cpu")
    httpx.post(f"{gateway.url}/fleet/bench", json={"max_tokens": 16}, timeout=60)
    body = {"model": "m", "messages": [], "stream": False, "options": {"num_predict": 20}}

    def ask() -> str:
        response = httpx.post(f"{gateway.url}/api/chat", json=body, timeout=120)
        assert response.status_code == 200
        return response.headers["X-Ganglion-Neuron"]

    assert [ask() for _ in range(5)] == ["fast"] * 5
    together = 40
    barrier = threading.Barrier(together)

    def ask_together() -> str:
        barrier.wait()
        return ask()

    with ThreadPoolExecutor(together) as pool:
        served = list(pool.map(lambda _: ask_together(), range(together)))
    # 20 tokens: 0.22 s on fast, 3.6 s on slow: slow pays only behind ~16 queued requests
    assert served.count("fast") >= 16
    assert 0 < served.count("slow") < served.count("fast")
