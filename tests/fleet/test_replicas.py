"""Two gateways on one PostgreSQL database agree on the fleet within a probe interval."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Proc, Spawner
from tests.fleet.test_discovery import FakeKubernetes, kubeconfig, service


def neurons(gateway: Proc) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in httpx.get(f"{gateway.url}/fleet/neurons").json()}


def eventually(check: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


def test_replicas_see_each_others_fleet_changes(spawn: Spawner, fresh_postgres: str) -> None:
    a = spawn.gateway(fresh_postgres)
    b = spawn.gateway(fresh_postgres)
    sim = spawn.sim(20)
    assert httpx.post(f"{a.url}/fleet/neurons", json={"url": sim.url, "name": "w"}).is_success
    eventually(lambda: neurons(b).get("w", {}).get("status") == "active")

    assert httpx.post(f"{a.url}/fleet/neurons/w/suspend").is_success
    eventually(lambda: neurons(b)["w"]["status"] == "suspended")
    answer = httpx.post(
        f"{b.url}/api/generate", json={"model": "sim-model", "prompt": "hi", "stream": False}
    )
    assert answer.status_code == 404, answer.text  # b no longer routes to it either
    assert not [e for e in httpx.get(f"{sim.url}/sim/log").json() if e["path"] == "/api/generate"]

    assert httpx.post(f"{b.url}/fleet/neurons/w/resume").is_success
    eventually(lambda: neurons(a)["w"]["status"] == "active")
    time.sleep(1)  # a few probe rounds on both: the suspension stays lifted
    assert neurons(a)["w"]["status"] == neurons(b)["w"]["status"] == "active"

    assert httpx.delete(f"{b.url}/fleet/neurons/w").status_code == 204
    eventually(lambda: "w" not in neurons(a))


def test_two_discovering_replicas_agree_on_the_services_they_find(
    spawn: Spawner, fresh_postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the Helm chart runs them: both replicas watch the same Services and register into one
    store. Each Service becomes one neuron on both, and goes from both when it goes."""
    api = FakeKubernetes().start()
    try:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", api.url)))
        monkeypatch.setenv("GANGLION_DISCOVER_RETRY_S", "0.5")
        sims = [spawn.sim(50), spawn.sim(50)]
        api.put(service("ollama-a", sims[0].url))
        replicas = [
            spawn.ganglion(
                *("serve", "--port", "{port}", "--db", fresh_postgres, "--probe-interval", "0.5"),
                *("--discover", "kubernetes"),
                ready_path="/readyz",
                env={"GANGLION_REPLICA_ID": name},
            )
            for name in ("a", "b")
        ]
        found = "k8s-ganglion-ollama-a"
        for gateway in replicas:
            eventually(lambda g=gateway: neurons(g).get(found, {}).get("status") == "active")
        api.put(service("ollama-b", sims[1].url))
        both = {found, "k8s-ganglion-ollama-b"}
        for gateway in replicas:
            eventually(lambda g=gateway: set(neurons(g)) == both)
            assert {n["url"] for n in neurons(gateway).values()} == {s.url for s in sims}
        api.delete("ganglion", "ollama-a")
        for gateway in replicas:
            eventually(lambda g=gateway: set(neurons(g)) == {"k8s-ganglion-ollama-b"})
        time.sleep(1)  # a few retry and probe rounds on both: nothing comes back or flaps
        for gateway in replicas:
            assert set(neurons(gateway)) == {"k8s-ganglion-ollama-b"}
            assert neurons(gateway)["k8s-ganglion-ollama-b"]["status"] == "active"
    finally:
        api.close()
