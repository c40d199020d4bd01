"""Two gateways on one PostgreSQL database agree on the fleet within a probe interval."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Proc, Spawner


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
