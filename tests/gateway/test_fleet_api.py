from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ganglion.config import Settings
from ganglion.gateway.app import create_app
from ganglion.gateway.state import Gateway
from tests.fakes import FakeFleet, in_process

CONTRACT = {
    "name",
    "url",
    "api",
    "node",
    "models",
    "status",
    "is_active",
    "reason",
    "tokens_per_second",
    "speeds",
    "prefill_speeds",
    "load_seconds",
    "in_flight",
    "last_seen",
}


@pytest.fixture
async def app_client(
    fleet: FakeFleet, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    async with in_process(fleet, tmp_path / "g.db") as (app, client):
        yield client, app.state.gateway


async def test_add_list_get_and_the_contract(app_client: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = app_client
    added = await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "node": "rig"})
    assert added.status_code == 201, added.text
    view = added.json()
    assert set(view) >= CONTRACT
    assert view | {"last_seen": None} == view | {
        "name": "gpu-11434",
        "api": "ollama",
        "node": "rig",
        "models": ["llama3"],
        "status": "active",
        "is_active": True,
        "reason": None,
        "in_flight": 0,
        "tokens_per_second": None,
        "last_seen": None,
    }
    assert view["last_seen"] is not None
    listed = (await client.get("/fleet/neurons")).json()
    assert [n["name"] for n in listed] == ["gpu-11434"]
    assert (await client.get("/fleet/neurons/gpu-11434")).json()["url"] == "http://gpu:11434"


async def test_bench_measures_each_model_and_updates_the_list(
    app_client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = app_client
    await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"})
    await client.post("/fleet/neurons", json={"url": "http://cpu:11434", "name": "cpu"})
    results = (await client.post("/fleet/bench", json={"max_tokens": 32})).json()
    assert {(r["neuron"], r["model"]) for r in results} == {
        ("gpu", "llama3"),
        ("cpu", "llama3"),
        ("cpu", "qwen"),
    }
    speeds = {
        n["name"]: n["tokens_per_second"] for n in (await client.get("/fleet/neurons")).json()
    }
    assert speeds["gpu"] == pytest.approx(90.0, rel=0.01)
    assert speeds["cpu"] == pytest.approx(13.0, rel=0.01)


async def test_bench_stream_reports_progress(app_client: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = app_client
    await client.post("/fleet/neurons", json={"url": "http://cpu:11434", "name": "cpu"})
    response = await client.post("/fleet/bench?stream=true", json={"max_tokens": 16})
    events = [line for line in response.text.splitlines() if line]
    kinds = [__import__("json").loads(line)["event"] for line in events]
    assert kinds == ["plan", "start", "result", "start", "result"]


async def test_probes_take_a_dead_neuron_offline_and_bring_it_back(
    app_client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    client, gateway = app_client
    await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"})
    fleet.neurons["gpu:11434"].up = False
    await gateway.registry.probe_all()
    assert (await client.get("/fleet/neurons/gpu")).json()["status"] == "active"  # hysteresis
    await gateway.registry.probe_all()
    view = (await client.get("/fleet/neurons/gpu")).json()
    assert (view["status"], view["is_active"]) == ("offline", False)
    assert "gpu:11434" in view["reason"]
    fleet.neurons["gpu:11434"].up = True
    await gateway.registry.probe_all()
    view = (await client.get("/fleet/neurons/gpu")).json()
    assert (view["status"], view["reason"]) == ("active", None)


async def test_probes_never_call_a_generate_endpoint(
    app_client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    client, gateway = app_client
    await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"})
    for _ in range(3):
        await gateway.registry.probe_all()
    assert set(fleet.neurons["gpu:11434"].log) <= {"/api/version", "/api/tags", "/api/ps"}


async def test_suspend_and_resume(app_client: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, gateway = app_client
    await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"})
    view = (await client.post("/fleet/neurons/gpu/suspend")).json()
    assert (view["status"], view["is_active"]) == ("suspended", False)
    assert view["reason"]
    await gateway.registry.probe_all()
    assert (await client.get("/fleet/neurons/gpu")).json()["status"] == "suspended"
    view = (await client.post("/fleet/neurons/gpu/resume")).json()
    assert (view["status"], view["is_active"]) == ("active", True)


async def test_state_survives_a_restart(fleet: FakeFleet, tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'g.db'}")
    for round_ in range(2):
        app = create_app(settings, transport=fleet.transport(), probe=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
                if round_ == 0:
                    await client.post(
                        "/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"}
                    )
                    await client.post("/fleet/bench", json={"max_tokens": 16})
                    await client.post("/fleet/neurons/gpu/suspend")
                else:
                    view = (await client.get("/fleet/neurons/gpu")).json()
                    assert view["status"] == "suspended"
                    assert view["tokens_per_second"] == pytest.approx(90.0, rel=0.01)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"url": "http://nowhere:1"}, 422, "check that the server is running"),
        ({"url": "ftp://gpu"}, 422, "give http://HOST:PORT"),
        ({"url": "http://web:80"}, 422, "--api"),
    ],
)
async def test_bad_neurons_are_refused_with_advice(
    app_client: tuple[httpx.AsyncClient, Gateway],
    fleet: FakeFleet,
    body: dict[str, str],
    status: int,
    words: str,
) -> None:
    fleet.add("web:80", not_llm=True)
    client, _ = app_client
    response = await client.post("/fleet/neurons", json=body)
    assert response.status_code == status
    assert words in response.json()["error"]


async def test_duplicates_and_unknown_names(app_client: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = app_client
    await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"})
    again = await client.post("/fleet/neurons", json={"url": "http://cpu:11434", "name": "gpu"})
    assert again.status_code == 409
    assert "already registered" in again.json()["error"]
    same_url = await client.post("/fleet/neurons", json={"url": "http://gpu:11434/", "name": "x"})
    assert same_url.status_code == 409
    for method, path in [
        ("GET", "/fleet/neurons/ghost"),
        ("DELETE", "/fleet/neurons/ghost"),
        ("POST", "/fleet/neurons/ghost/suspend"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404
        assert "no neuron named 'ghost'" in response.json()["error"]


async def test_delete_removes_it(app_client: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = app_client
    await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"})
    assert (await client.delete("/fleet/neurons/gpu")).status_code == 204
    assert (await client.get("/fleet/neurons")).json() == []


async def test_a_list_registers_many_and_says_which_failed(
    fleet: FakeFleet, app_client: tuple[httpx.AsyncClient, Gateway]
) -> None:
    client, _ = app_client
    for index in range(12):
        fleet.add(f"box{index}:11434")
    wanted = [{"url": f"http://box{index}:11434", "name": f"n{index}"} for index in range(12)]
    added = await client.post("/fleet/neurons", json=wanted)
    assert added.status_code == 201, added.text
    assert [item["neuron"]["name"] for item in added.json()] == [f"n{i}" for i in range(12)]
    again = [
        {"url": "http://box0:11434", "name": "n0"},  # registered already
        {"url": "http://nowhere:11434", "name": "lost"},  # nothing answers there
        {"url": "http://gpu:11434", "name": "fresh"},
    ]
    fleet.add("gpu:11434")
    mixed = await client.post("/fleet/neurons", json=again)
    assert mixed.status_code == 207, mixed.text
    first, second, third = mixed.json()
    assert first["neuron"] is None
    assert "already registered" in first["error"]
    assert second["neuron"] is None
    assert "nowhere" in second["error"]
    assert third["error"] is None
    assert third["neuron"]["name"] == "fresh"


async def test_the_list_is_in_natural_order_filtered_and_paged(
    fleet: FakeFleet, app_client: tuple[httpx.AsyncClient, Gateway]
) -> None:
    client, _ = app_client
    for index in (10, 2, 1):
        fleet.add(f"box{index}:11434", models=["qwen"] if index == 2 else ["llama3"])
        body = {"url": f"http://box{index}:11434", "name": f"n{index}", "node": f"rack{index % 2}"}
        assert (await client.post("/fleet/neurons", json=body)).status_code == 201
    listed = await client.get("/fleet/neurons")
    assert [view["name"] for view in listed.json()] == ["n1", "n2", "n10"]
    assert listed.headers["X-Total-Count"] == "3"
    paged = await client.get("/fleet/neurons", params={"offset": 1, "limit": 1})
    assert [view["name"] for view in paged.json()] == ["n2"]
    assert paged.headers["X-Total-Count"] == "3"
    on_rack0 = await client.get("/fleet/neurons", params={"node": "rack0"})
    assert [view["name"] for view in on_rack0.json()] == ["n2", "n10"]
    serving = await client.get("/fleet/neurons", params={"model": "llama3"})
    assert [view["name"] for view in serving.json()] == ["n1", "n10"]
    active = await client.get("/fleet/neurons", params={"status": ["active", "degraded"]})
    assert len(active.json()) == 3
    offline = await client.get("/fleet/neurons", params={"status": "offline"})
    assert (offline.json(), offline.headers["X-Total-Count"]) == ([], "0")
