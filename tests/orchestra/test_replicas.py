"""A gateway killed mid-run, and two gateways on one database: nothing computed twice.

Everything is real: gateway processes, simulated neurons, SQLite files and PostgreSQL. Each
run's plan names its subtasks uniquely, so the neurons' request logs (``GET /sim/log``) count
how many times each piece of work was asked for. These runs rewrite their answers (the
leases and the resumption are the same for both syntheses); the stitched pipeline's restart
is in ``test_stitch_e2e.py``.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ganglion.store import Store
from ganglion.store import runs as records
from tests.conftest import Proc, Spawner, run_cli
from tests.orchestra.test_runs_e2e import wait_for

LEASE_S = "2"


def plan(tag: str, count: int, tokens: int) -> str:
    subtasks = [{"task": f"{tag} part {n}", "expected_tokens": tokens} for n in range(count)]
    return json.dumps({"subtasks": subtasks})


def neurons(spawn: Spawner, workers: int, tps: float, brains: dict[str, str]) -> list[Proc]:
    """Workers serving ``llama3``, and one brain per entry of ``brains`` (model: plan)."""
    sims = [spawn.sim(tps, model="llama3") for _ in range(workers)]
    sims += [
        spawn.sim(200, model=model, extra=("--structured-reply", script))
        for model, script in brains.items()
    ]
    return sims


def enlist(gateway: Proc, sims: list[Proc]) -> None:
    for n, sim in enumerate(sims):
        body = {"url": sim.url, "name": f"n{n}"}
        assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201


def start(gateway: Proc, brain: str, subtasks: int) -> str:
    body: dict[str, Any] = {"task": f"task for {brain}", "brain": brain, "model": "llama3"}
    body |= {"decompose": "always", "max_subtasks": subtasks, "synthesis": "rewrite"}
    answer = httpx.post(f"{gateway.url}/fleet/runs", json=body)
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["id"]
    return run_id


def asked(sims: list[Proc]) -> Counter[str]:
    """How many times each prompt was sent to a generate endpoint, over the whole fleet."""
    count: Counter[str] = Counter()
    for sim in sims:
        for entry in httpx.get(f"{sim.url}/sim/log").json():
            if "prompt" in entry:
                count[entry["prompt"]] += 1
    return count


def kill(proc: Proc) -> None:
    assert proc.process is not None
    proc.process.send_signal(signal.SIGKILL)
    proc.process.wait()


def some_done_some_active(view: dict[str, Any]) -> bool:
    statuses = [d["status"] for d in view["delegations"] or []]
    return statuses.count("completed") >= 2 and "active" in statuses


def test_a_gateway_killed_mid_run_resumes_and_reuses_completed_work(
    spawn: Spawner, store_url: str
) -> None:
    sims = neurons(spawn, 2, 10, {"brain": plan("solo", 6, 30)})
    gateway = spawn.gateway(store_url, env={"GANGLION_RUN_LEASE_S": LEASE_S})
    enlist(gateway, sims)
    run_id = start(gateway, "brain", 6)
    before = wait_for(gateway, run_id, some_done_some_active)
    kill(gateway)
    done = {d["index"]: d["output"] for d in before["delegations"] if d["status"] == "completed"}
    cut = {d["index"] for d in before["delegations"] if d["status"] == "active"}

    again = spawn.gateway(store_url, port=gateway.port)  # the same replica, back at once
    view = wait_for(again, run_id, lambda v: v["status"] != "running")

    assert view["status"] == "completed", view["reason"]
    assert view["answer"]
    assert all(d["status"] == "completed" and d["output"] for d in view["delegations"])
    for d in view["delegations"]:
        if d["index"] in done:  # reused, not recomputed
            assert (d["attempts"], d["output"]) == (1, done[d["index"]])
    count = asked(sims)
    for n in range(6):
        # work finished before the kill was asked for once; work cut by it, once more. A
        # part still pending in the snapshot may have started before the kill landed.
        expected = {1} if n in done else {2} if n in cut else {1, 2}
        assert count[f"solo part {n}"] in expected, count
    syntheses = sum(n for p, n in count.items() if p.startswith("Task: task for brain"))
    assert (count["task for brain"], syntheses) == (1, 1), count  # one plan, one answer


def test_two_replicas_on_one_postgresql_never_run_the_same_delegation_twice(
    spawn: Spawner, fresh_postgres: str
) -> None:
    brains = {f"brain{n}": plan(f"run{n}", 4, 30) for n in range(4)}
    sims = neurons(spawn, 3, 10, brains)
    env = {"GANGLION_RUN_LEASE_S": LEASE_S}
    a = spawn.gateway(fresh_postgres, env=env | {"GANGLION_REPLICA_ID": "replica-a"})
    enlist(a, sims)
    b = spawn.gateway(fresh_postgres, env=env | {"GANGLION_REPLICA_ID": "replica-b"})
    runs = {start(a, "brain0", 4): a, start(b, "brain1", 4): b}
    runs |= {start(a, "brain2", 4): a, start(b, "brain3", 4): b}
    first = next(run_id for run_id, gw in runs.items() if gw is a)
    before = wait_for(
        a, first, lambda v: any(d["status"] == "active" for d in v["delegations"] or [])
    )
    kill(a)  # b adopts a's runs once their leases run out
    cut: set[str] = set()
    for d in before["delegations"]:
        if d["status"] == "active":
            cut.add(d["subtask"])

    views = [wait_for(b, run_id, lambda v: v["status"] != "running", within=180) for run_id in runs]

    assert [v["status"] for v in views] == ["completed"] * 4, [v["reason"] for v in views]
    for view in views:
        assert all(d["status"] == "completed" and d["output"] for d in view["delegations"])
    count = asked(sims)
    work = {p: n for p, n in count.items() if re.fullmatch(r"run\d part \d", p)}
    assert len(work) == 16
    # a's other runs may also have had work in flight at the kill: at most twice, never more
    assert max(work.values()) <= 2, work
    assert all(work[p] == 2 for p in cut if p in work)
    twice = {p for p, n in work.items() if n == 2}
    first_run = {f"run0 part {n}" for n in range(4)}
    assert cut <= twice
    b_runs = {f"run1 part {n}" for n in range(4)} | {f"run3 part {n}" for n in range(4)}
    assert not twice & b_runs  # the live replica's own runs: every piece exactly once
    assert twice - first_run <= {f"run2 part {n}" for n in range(4)}
    for n in range(4):  # one answer per run; only a killed replica's plan may be asked again
        plans = count[f"task for brain{n}"]
        syntheses = sum(c for p, c in count.items() if p.startswith(f"Task: task for brain{n}"))
        assert plans == 1 or (n in (0, 2) and plans == 2), count
        assert syntheses == 1, count


# as the Helm chart runs them


def chart_replica(spawn: Spawner, db: str, key_file: Path, name: str) -> Proc:
    """What one replica's pod does: the init container imports the Secret's admin key, then
    the gateway starts with keys required, and takes traffic once ``/readyz`` answers 200."""
    imported = run_cli(
        "keys", "import", "--admin", "--name", "chart", "--file", str(key_file), "--db", db
    )
    assert imported.returncode == 0, imported.stderr
    return spawn.ganglion(
        *("serve", "--port", "{port}", "--db", db, "--require-keys", "--probe-interval", "0.5"),
        ready_path="/readyz",  # answers 503 until ready, and the wait needs under 500
        env={"GANGLION_RUN_LEASE_S": LEASE_S, "GANGLION_REPLICA_ID": name},
    )


def until(gateway: Proc, path: str, check: Callable[[Any], bool], auth: dict[str, str]) -> Any:
    deadline = time.monotonic() + 120
    while not check(body := httpx.get(f"{gateway.url}{path}", headers=auth).json()):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body


def test_chart_replicas_hand_a_stopped_replicas_run_to_the_other(
    spawn: Spawner, fresh_postgres: str, tmp_path: Path
) -> None:
    admin = run_cli("keys", "generate").stdout.strip()
    secret = tmp_path / "admin"
    secret.write_text(admin)
    a = chart_replica(spawn, fresh_postgres, secret, "replica-a")
    b = chart_replica(spawn, fresh_postgres, secret, "replica-b")
    auth = {"Authorization": f"Bearer {admin}"}
    assert httpx.get(f"{b.url}/readyz").json()["ready"] is True
    assert httpx.get(f"{a.url}/fleet/neurons").status_code == 401  # keys are enforced
    sims = neurons(spawn, 2, 10, {"brain": plan("handover", 4, 40)})
    for n, sim in enumerate(sims):
        body = {"url": sim.url, "name": f"n{n}"}
        assert httpx.post(f"{a.url}/fleet/neurons", json=body, headers=auth).status_code == 201
    until(b, "/fleet/neurons", lambda ns: sum(n["is_active"] for n in ns) == len(sims), auth)

    body = {"task": "task for brain", "brain": "brain", "model": "llama3", "max_subtasks": 4}
    body |= {"decompose": "always", "synthesis": "rewrite"}
    started = httpx.post(f"{a.url}/fleet/runs", json=body, headers=auth)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    seen = until(
        b,  # visible on the other replica while the first carries it
        f"/fleet/runs/{run_id}",
        lambda v: (
            v["status"] == "running"
            and any(d["status"] == "active" for d in v["delegations"] or [])
        ),
        auth,
    )
    assert seen["task"] == "task for brain"

    a.stop()  # SIGTERM, as a rolling update or a drain sends it
    assert a.process is not None
    assert a.process.returncode is not None
    view = until(b, f"/fleet/runs/{run_id}", lambda v: v["status"] != "running", auth)

    assert view["status"] == "completed", view["reason"]
    assert view["answer"]
    assert all(d["status"] == "completed" and d["output"] for d in view["delegations"])
    store = Store.open(fresh_postgres)
    try:
        row = records.get_run(store, run_id)
    finally:
        store.close()
    assert row is not None
    assert row.owner == "replica-b"  # adopted by the replica left
    assert httpx.get(f"{b.url}/readyz").status_code == 200
