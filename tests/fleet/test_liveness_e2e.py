"""The fleet through real processes: a gateway, simulated neurons, the CLI, on loopback."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Proc, Spawner, run_cli

PROBE_INTERVAL = 1.0
GENERATE_PATHS = {
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
}


def ganglion(gateway: Proc, *args: str) -> Any:
    result = run_cli(*args, "--gateway", gateway.url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "--json" in args else result.stdout


def neuron(gateway: Proc, name: str) -> dict[str, Any]:
    view: dict[str, Any] = httpx.get(f"{gateway.url}/fleet/neurons/{name}").json()
    return view


def wait_status(gateway: Proc, name: str, status: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        view = neuron(gateway, name)
        if view["status"] == status or time.monotonic() > deadline:
            return view
        time.sleep(0.1)


@pytest.fixture
def gateway(spawn: Spawner, db_url: str) -> Proc:
    return spawn.gateway(db_url, probe_interval=PROBE_INTERVAL)


def test_two_sims_measured_killed_and_revived(spawn: Spawner, gateway: Proc) -> None:
    fast = spawn.sim(90)
    slow = spawn.sim(5.5)
    ganglion(gateway, "neuron", "add", fast.url, "--name", "fast", "--node", "gpu-box")
    ganglion(gateway, "neuron", "add", slow.url, "--name", "slow", "--api", "ollama")

    results = ganglion(gateway, "bench", "--json", "--max-tokens", "32")
    measured = {r["neuron"]: r["tokens_per_second"] for r in results}
    assert measured["fast"] == pytest.approx(90, rel=0.15)
    assert measured["slow"] == pytest.approx(5.5, rel=0.15)

    listed = {n["name"]: n for n in ganglion(gateway, "neuron", "list", "--json")}
    assert listed["fast"]["tokens_per_second"] == pytest.approx(90, rel=0.15)
    assert listed["fast"]["node"] == "gpu-box"
    assert listed["slow"]["api"] == "ollama"
    assert all(n["status"] == "active" and n["is_active"] for n in listed.values())

    slow.kill()
    view = wait_status(gateway, "slow", "offline", within=3 * PROBE_INTERVAL + 1.5)
    assert (view["status"], view["is_active"]) == ("offline", False)
    assert slow.url.removeprefix("http://") in view["reason"]
    assert neuron(gateway, "fast")["status"] == "active"

    spawn.sim(5.5, port=slow.port)
    view = wait_status(gateway, "slow", "active", within=3 * PROBE_INTERVAL + 1.5)
    assert (view["status"], view["reason"], view["is_active"]) == ("active", None, True)


def test_completed_work_is_never_shown_offline(spawn: Spawner, gateway: Proc) -> None:
    sim = spawn.sim(200)
    ganglion(gateway, "neuron", "add", sim.url, "--name", "busy")
    for _ in range(3):
        ganglion(gateway, "bench", "busy", "--json", "--max-tokens", "16")
        assert neuron(gateway, "busy")["status"] == "active"
        time.sleep(PROBE_INTERVAL)
        assert neuron(gateway, "busy")["status"] == "active"


def test_suspend_and_resume_from_the_cli(spawn: Spawner, gateway: Proc) -> None:
    sim = spawn.sim(50)
    ganglion(gateway, "neuron", "add", sim.url, "--name", "box")
    assert "suspended" in ganglion(gateway, "neuron", "suspend", "box")
    time.sleep(2 * PROBE_INTERVAL)
    view = neuron(gateway, "box")
    assert (view["status"], view["is_active"]) == ("suspended", False)
    assert "active" in ganglion(gateway, "neuron", "resume", "box")
    assert neuron(gateway, "box")["is_active"] is True
    ganglion(gateway, "neuron", "rm", "box")
    assert ganglion(gateway, "neuron", "list", "--json") == []


def test_probes_never_call_a_generate_endpoint(spawn: Spawner, gateway: Proc) -> None:
    sim = spawn.sim(50)
    ganglion(gateway, "neuron", "add", sim.url, "--name", "watched")
    time.sleep(4 * PROBE_INTERVAL)
    log = httpx.get(f"{sim.url}/sim/log").json()
    probed = {entry["path"] for entry in log}
    assert len(log) >= 6  # the gateway did probe, several times
    assert "/api/version" in probed
    assert not probed & GENERATE_PATHS


def test_the_store_on_postgresql(spawn: Spawner, fresh_postgres: str) -> None:
    gateway = spawn.gateway(fresh_postgres, probe_interval=PROBE_INTERVAL)
    sim = spawn.sim(90)
    ganglion(gateway, "neuron", "add", sim.url, "--name", "pg")
    ganglion(gateway, "bench", "--json", "--max-tokens", "16")
    gateway.stop()
    again = spawn.gateway(fresh_postgres, probe_interval=PROBE_INTERVAL)
    view = neuron(again, "pg")
    assert view["tokens_per_second"] == pytest.approx(90, rel=0.15)
