"""The Ollama and OpenAI front doors in-process, in front of a fake fleet: failover,
timeouts, mid-stream deaths, backpressure, pinning, errors in the caller's dialect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from ganglion.config import Settings
from ganglion.gateway import front
from ganglion.gateway.app import create_app
from ganglion.gateway.state import Gateway
from ganglion.store.queries import Store
from tests.fakes import FakeFleet, in_process

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def fleet() -> FakeFleet:
    fake = FakeFleet()
    fake.add("fast:11434", tokens_per_second=90.0)
    fake.add("slow:11434", tokens_per_second=5.5)
    return fake


@pytest.fixture
async def client(
    fleet: FakeFleet, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'g.db'}",
        first_byte_timeout_s=0.5,
        idle_timeout_s=0.5,
        max_queue=1,
    )
    app = create_app(settings, transport=fleet.transport(), probe=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            for name in ("fast", "slow"):
                await http.post(
                    "/fleet/neurons", json={"url": f"http://{name}:11434", "name": name}
                )
            await http.post("/fleet/bench", json={"max_tokens": 16})
            yield http, app.state.gateway


def ndjson(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


async def test_ollama_chat_goes_to_the_fast_neuron_with_timings(
    client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    http, _ = client
    response = await http.post(
        "/api/chat", json=CHAT | {"stream": False, "options": {"num_predict": 9}}
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Ganglion-Neuron"] == "fast"
    body = response.json()
    assert body["done"] is True
    assert body["eval_count"] == 9
    assert body["message"]["content"] == "word " * 9
    assert body["eval_duration"] == pytest.approx(9 / 90 * 1e9, rel=0.01)


async def test_streams_are_ndjson_ending_with_done(
    client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    http, _ = client
    lines = ndjson(
        await http.post(
            "/api/generate", json={"model": "llama3", "prompt": "x", "options": {"num_predict": 4}}
        )
    )
    assert [line["done"] for line in lines] == [False] * 4 + [True]
    assert "".join(str(line["response"]) for line in lines) == "word " * 4


async def test_failover_when_a_neuron_refuses_connections(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, gateway = client
    fleet.neurons["fast:11434"].up = False
    response = await http.post("/api/chat", json=CHAT | {"stream": False})
    assert response.status_code == 200
    assert response.headers["X-Ganglion-Neuron"] == "slow"
    assert gateway.registry.get("fast").status == "active"  # a failed request is not death
    again = await http.post("/api/chat", json=CHAT | {"stream": False})
    assert again.headers["X-Ganglion-Neuron"] == "slow"  # fast is cooling down


async def test_failover_when_a_neuron_hangs_before_the_first_token(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    fleet.neurons["fast:11434"].hang = True
    response = await http.post("/v1/chat/completions", json=CHAT | {"max_tokens": 3})
    assert response.status_code == 200
    assert response.headers["X-Ganglion-Neuron"] == "slow"
    assert response.json()["choices"][0]["message"]["content"] == "word " * 3


async def test_a_whole_answer_is_asked_whole_only_where_nothing_is_left_to_fail_over_to(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    fast, slow = fleet.neurons["fast:11434"], fleet.neurons["slow:11434"]
    fast.streamed.clear()
    first = await http.post("/api/chat", json=CHAT | {"stream": False})
    assert first.headers["X-Ganglion-Neuron"] == "fast"
    assert fast.streamed == [True]  # slow was next: a stalled fast had to be told in time
    pinned = await http.post(
        "/v1/chat/completions", json=CHAT | {"max_tokens": 4}, headers={"X-Ganglion-Neuron": "slow"}
    )
    assert pinned.json()["choices"][0]["message"]["content"] == "word " * 4
    fast.up = False
    last = await http.post(
        "/api/generate", json={"model": "llama3", "prompt": "x", "stream": False}
    )
    assert last.headers["X-Ganglion-Neuron"] == "slow"
    assert last.json()["response"] == "word " * 16
    assert last.json()["eval_count"] == 16
    assert slow.streamed[-2:] == [False, False]  # pinned, then the last candidate: one body


@pytest.mark.parametrize("pinned", [None, "fast"], ids=["streamed-from", "asked-whole"])
async def test_a_whole_chat_answer_counts_as_held_for_the_next_turn(
    client: tuple[httpx.AsyncClient, Gateway], pinned: str | None
) -> None:
    http, gateway = client
    headers = {"X-Ganglion-Neuron": pinned} if pinned else {}
    asked = [{"role": "user", "content": "tell me " * 400}]
    first = await http.post(
        "/api/chat", json={"model": "llama3", "messages": asked, "stream": False}, headers=headers
    )
    await gateway.dispatcher.settled()  # the answer is taken in once it has been sent
    answer = first.json()["message"]
    said = [*asked, {"role": answer["role"], "content": answer["content"]}]
    turn = front.chat_job("llama3", [*said, {"role": "user", "content": "and?"}], None)
    prompt = front.chat_job("llama3", asked, None)
    (held,) = [e for e in gateway.router.rank(turn) if e.neuron.name == "fast"]
    assert first.headers["X-Ganglion-Neuron"] == "fast"
    assert held.cached_tokens > prompt.prompt_tokens  # the prompt, and the answer after it


async def test_a_whole_answer_that_breaks_midway_fails_over(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, gateway = client
    fleet.neurons["fast:11434"].die_after = 3
    response = await http.post("/api/chat", json=CHAT | {"stream": False})
    assert response.status_code == 200, response.text
    assert response.headers["X-Ganglion-Neuron"] == "slow"  # the caller had seen nothing yet
    assert response.json()["message"]["content"] == "word " * 16
    assert "broke off midway" in str(gateway.registry.get("fast").health.errors[-1])
    again = await http.post("/api/chat", json=CHAT | {"stream": False})
    assert again.headers["X-Ganglion-Neuron"] == "slow"  # fast is cooling down


async def test_a_request_waiting_on_a_neuron_that_goes_offline_fails_over_at_once(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    fleet.neurons["fast:11434"].hang = True
    async with in_process(fleet, tmp_path / "g.db", first_byte_timeout_s=300.0) as (app, http):
        for name in ("fast", "slow"):
            await http.post("/fleet/neurons", json={"url": f"http://{name}:11434", "name": name})
        gateway: Gateway = app.state.gateway
        fast = gateway.registry.get("fast")
        answer = asyncio.create_task(http.post("/api/chat", json=CHAT | {"stream": False}))
        while not fast.in_flight:
            await asyncio.sleep(0.01)
        fleet.neurons["fast:11434"].up = False  # its host is gone: probes cannot connect
        for _ in range(2):
            await gateway.registry.probe_all()
        response = await asyncio.wait_for(answer, 30)  # not the 300 s first-byte timeout
    assert response.status_code == 200
    assert response.headers["X-Ganglion-Neuron"] == "slow"
    assert fast.status == "offline"


async def test_a_client_error_is_passed_on_without_failover(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    fleet.neurons["fast:11434"].refuse = 400
    response = await http.post("/api/chat", json=CHAT)
    assert response.status_code == 400
    assert "refused with 400" in response.json()["error"]
    assert fleet.neurons["slow:11434"].log.count("/api/chat") == 0


async def test_every_neuron_failing_is_one_clear_error(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    for fake in fleet.neurons.values():
        fake.up = False
    ollama = await http.post("/api/chat", json=CHAT)
    assert ollama.status_code == 502
    assert "fast" in ollama.json()["error"]
    assert "slow" in ollama.json()["error"]
    openai = await http.post("/v1/chat/completions", json=CHAT)
    assert openai.status_code == 502
    assert openai.json()["error"]["type"] == "server_error"


async def test_death_mid_stream_is_a_clean_error_in_each_dialect(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, gateway = client
    for fake in fleet.neurons.values():
        fake.die_after = 3
    lines = ndjson(await http.post("/api/chat", json=CHAT | {"options": {"num_predict": 10}}))
    assert len(lines) == 4
    assert "failed mid-answer" in str(lines[-1]["error"])
    sse = await http.post("/v1/chat/completions", json=CHAT | {"stream": True, "max_tokens": 10})
    events = [e.removeprefix("data: ") for e in sse.text.split("\n\n") if e.startswith("data: ")]
    assert "[DONE]" not in events
    assert "failed mid-answer" in json.loads(events[-1])["error"]["message"]
    assert [n.in_flight for n in gateway.registry.neurons()] == [0, 0]


async def test_a_neuron_that_failed_mid_answer_cools_down(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    fleet.neurons["fast:11434"].die_after = 3
    broken = await http.post("/api/chat", json=CHAT | {"options": {"num_predict": 10}})
    assert broken.headers["X-Ganglion-Neuron"] == "fast"
    fleet.neurons["fast:11434"].die_after = None
    again = await http.post("/api/chat", json=CHAT | {"stream": False})
    assert again.status_code == 200
    assert again.headers["X-Ganglion-Neuron"] == "slow"


async def test_saturation_answers_503_with_retry_after(
    client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    http, gateway = client
    router = gateway.router
    from ganglion.routing import Job

    job = Job("llama3", output_tokens=100)
    held = []
    while ranked := router.rank(job):
        admitted = router.admit(ranked[0], job)
        admitted.__enter__()
        held.append(admitted)
    assert len(held) == 4  # one slot and a queue of one on each neuron
    ollama = await http.post("/api/chat", json=CHAT)
    assert ollama.status_code == 503
    assert int(ollama.headers["Retry-After"]) >= 1
    assert "busy" in ollama.json()["error"]
    openai = await http.post("/v1/chat/completions", json=CHAT)
    assert openai.status_code == 503
    assert "busy" in openai.json()["error"]["message"]


async def test_pinning_and_unknown_models(client: tuple[httpx.AsyncClient, Gateway]) -> None:
    http, _ = client
    pinned = await http.post(
        "/api/chat", json=CHAT | {"stream": False}, headers={"X-Ganglion-Neuron": "slow"}
    )
    assert pinned.headers["X-Ganglion-Neuron"] == "slow"
    missing = await http.post("/api/chat", json=CHAT | {"model": "nope"})
    assert missing.status_code == 404
    assert "not served by any active neuron" in missing.json()["error"]
    ghost = await http.post("/api/chat", json=CHAT, headers={"X-Ganglion-Neuron": "ghost"})
    assert ghost.status_code == 404


async def test_model_listings_are_the_fleets_union(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    fleet.add("third:11434", models=["qwen", "llama3"])
    await http.post("/fleet/neurons", json={"url": "http://third:11434", "name": "third"})
    tags = [m["name"] for m in (await http.get("/api/tags")).json()["models"]]
    assert sorted(tags) == ["llama3", "qwen"]
    models = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
    assert sorted(models) == ["llama3", "qwen"]
    assert (await http.get("/api/version")).json()["version"]


async def test_traffic_updates_speed_estimates(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, gateway = client
    fleet.neurons["fast:11434"].tokens_per_second = 60.0
    for _ in range(5):
        await http.post("/api/chat", json=CHAT | {"stream": False, "options": {"num_predict": 20}})
    await gateway.dispatcher.settled()
    assert gateway.registry.get("fast").speeds.speed("llama3") < 75.0


async def test_native_fields_reach_a_neuron_of_the_same_dialect(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    seen: list[dict[str, object]] = []
    fake = fleet.neurons["fast:11434"]
    original = fake.handle

    def spy(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/chat":
            seen.append(json.loads(request.content))
        return original(request)

    fake.handle = spy  # type: ignore[method-assign]
    body = CHAT | {
        "stream": False,
        "keep_alive": "5m",
        "options": {"num_ctx": 4096, "temperature": 0.1, "num_predict": 2},
    }
    await http.post("/api/chat", json=body)
    assert seen[0]["keep_alive"] == "5m"
    assert seen[0]["options"] == {"num_ctx": 4096, "temperature": 0.1, "num_predict": 2}


async def test_a_pinned_neuron_must_be_able_to_take_the_job(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    await http.post("/fleet/neurons/slow/suspend")
    suspended = await http.post("/api/chat", json=CHAT, headers={"X-Ganglion-Neuron": "slow"})
    assert suspended.status_code == 503
    assert "suspended" in suspended.json()["error"]
    fleet.add("other:11434", models=["qwen"])
    await http.post("/fleet/neurons", json={"url": "http://other:11434", "name": "other"})
    wrong = await http.post("/api/chat", json=CHAT, headers={"X-Ganglion-Neuron": "other"})
    assert wrong.status_code == 404
    assert "does not serve" in wrong.json()["error"]


async def test_a_neuron_too_busy_to_answer_fails_over(
    client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    http, _ = client
    fleet.neurons["fast:11434"].refuse = 429
    response = await http.post("/api/chat", json=CHAT | {"stream": False})
    assert response.status_code == 200
    assert response.headers["X-Ganglion-Neuron"] == "slow"


async def test_bad_run_requests_are_422_with_the_reason(
    client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    http, _ = client
    for body, words in [
        ({"task": "x", "policy": "fastest-ever"}, "unknown policy"),
        ({"task": "  "}, "task is empty"),
        ({"task": "x", "decompose": "sometimes"}, "unknown decompose mode"),
    ]:
        response = await http.post("/fleet/runs", json=body)
        assert response.status_code == 422, response.text
        assert words in response.json()["error"]
    missing = await http.get("/fleet/runs/nope")
    assert missing.status_code == 404


async def test_a_whole_answer_is_sent_before_its_bookkeeping_and_shutdown_waits_for_it(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    """The slot is still held while the answer goes out (the caller does not wait for what
    is left), let go right after; a shutdown just then still records the answer's speed."""
    database = tmp_path / "g.db"
    app = create_app(Settings(database_url=f"sqlite:///{database}"), transport=fleet.transport())
    held_while_sent: list[int] = []

    async def watching(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.body" and scope["path"] == "/api/chat":
                held_while_sent.append(app.state.gateway.registry.get("fast").in_flight)
            await send(message)

        await app(scope, receive, watched)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=watching)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            await http.post("/fleet/neurons", json={"url": "http://fast:11434", "name": "fast"})
            answer = await http.post("/api/chat", json=CHAT | {"stream": False})
        assert answer.json()["message"]["content"] == "word " * 16
        assert held_while_sent == [1]
        neuron_id = app.state.gateway.registry.get("fast").id
    store = Store.open(f"sqlite:///{database}")
    try:
        assert [s.source for s in store.samples(neuron_id)] == ["traffic"]
    finally:
        store.close()
