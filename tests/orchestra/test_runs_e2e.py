"""Runs end to end through real processes: a gateway, simulated neurons (brain included,
with a scripted plan), the CLI. Timings are compared side by side, never against a clock.

These runs use ``synthesis: rewrite``, the path where the brain writes a whole plan, the
parts are scheduled as the plan sizes them, and the brain rewrites the answer; the stitched
pipeline, the default, is in ``test_stitch_e2e.py``."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
import jsonschema
import pytest

from ganglion.orchestra.plan import plan_schema
from tests.conftest import Proc, Spawner, run_cli

CONTRACT = {
    "id",
    "status",
    "task",
    "mode",
    "reason",
    "answer",
    "plan",
    "timings",
    "schedule",
    "baseline",
    "speedup_estimate",
    "delegations",
}
DELEGATION = {"index", "neuron", "status", "attempts", "tokens", "seconds", "tokens_per_second"}
REWRITE = {"synthesis": "rewrite"}


def scripted_plan(count: int, tokens: int) -> str:
    subtasks = [{"task": f"Describe planet {n}", "expected_tokens": tokens} for n in range(count)]
    return json.dumps({"subtasks": subtasks})


def fleet(spawn: Spawner, db_url: str, speeds: dict[str, float], plan: str) -> Proc:
    gateway = spawn.gateway(db_url, probe_interval=1)
    for name, tps in speeds.items():
        sim = spawn.sim(tps, model="llama3", extra=("--structured-reply", plan))
        body = {"url": sim.url, "name": name, "node": name}
        assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201
    httpx.post(f"{gateway.url}/fleet/bench", json={"max_tokens": 16}, timeout=120)
    return gateway


def run(gateway: Proc, *args: str) -> dict[str, Any]:
    result = run_cli(
        "run",
        "Describe the planets",
        "--json",
        "--synthesis",
        "rewrite",
        "--gateway",
        gateway.url,
        *args,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def wait_for(gateway: Proc, run_id: str, check: Any, within: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        view: dict[str, Any] = httpx.get(f"{gateway.url}/fleet/runs/{run_id}").json()
        if check(view):
            return view
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never got there: {view}")


def test_an_even_fleet_splits_the_work_and_records_everything(spawn: Spawner, db_url: str) -> None:
    gateway = fleet(spawn, db_url, {f"w{i}": 20 for i in range(4)}, scripted_plan(8, 60))
    view = run(gateway, "--max-subtasks", "8")
    assert set(view) >= CONTRACT
    assert (view["status"], view["mode"], view["reason"]) == ("completed", "decomposed", None)
    assert view["answer"]
    jsonschema.validate(view["plan"], plan_schema(8))
    assert len(view["delegations"]) == 8
    for d in view["delegations"]:
        assert set(d) >= DELEGATION
        assert (d["status"], d["attempts"], d["tokens"]) == ("completed", 1, 60)
    assert {d["neuron"] for d in view["delegations"]} == {"w0", "w1", "w2", "w3"}
    timings, schedule = view["timings"], view["schedule"]
    assert set(timings) >= {"decompose_s", "parallel_s", "synthesize_s", "total_s"}
    assert timings["first_token_s"] >= timings["decompose_s"] + timings["parallel_s"]
    assert (
        timings["total_s"]
        >= timings["decompose_s"] + timings["parallel_s"] + timings["synthesize_s"]
    )
    assert schedule["lower_bound_s"] <= timings["parallel_s"]
    assert schedule["efficiency"] == pytest.approx(
        schedule["lower_bound_s"] / timings["parallel_s"], rel=0.01
    )
    assert view["baseline"]["estimated_solo_s"] == pytest.approx(480 / 20, rel=0.15)
    assert view["speedup_estimate"] > 1.0
    listed = run_cli("runs", "list", "--json", "--gateway", gateway.url)
    assert [r["id"] for r in json.loads(listed.stdout)] == [view["id"]]
    shown = run_cli("runs", "show", view["id"], "--gateway", gateway.url)
    assert "parallel" in shown.stdout
    assert "speed-up" in shown.stdout


SEED_FLEET = {"gpu": 90, "cpu": 13, "quadro": 5.8, "old": 5.5}


def test_on_the_seed_fleet_speed_beats_round_robin_and_never_loses_to_the_fast_neuron(
    spawn: Spawner, db_url: str
) -> None:
    gateway = fleet(spawn, db_url, SEED_FLEET, scripted_plan(4, 40))
    speed = run(gateway, "--decompose", "always", "--policy", "speed")
    robin = run(gateway, "--decompose", "always", "--policy", "round-robin")
    alone = 4 * 40 / 90
    # speed keeps the slow neurons out: no slower than the 90 tok/s neuron doing it all
    assert speed["timings"]["parallel_s"] <= alone * 1.25 + 0.5
    assert {d["neuron"] for d in speed["delegations"]} == {"gpu"}
    # round-robin hands work to 5.5 tok/s neurons: measurably slower, side by side
    assert robin["timings"]["parallel_s"] > 2 * speed["timings"]["parallel_s"]
    for view in (speed, robin):
        assert view["schedule"]["lower_bound_s"] <= view["timings"]["parallel_s"]
    auto = run(gateway)  # the default: decompose only if it can win
    assert auto["mode"] == "direct"
    assert "gpu alone" in auto["reason"]
    assert auto["baseline"]["neuron"] == "gpu"
    assert auto["timings"]["total_s"] <= auto["baseline"]["estimated_solo_s"] * 1.25 + 1.0


def test_killing_a_worker_mid_run_re_delegates(spawn: Spawner, db_url: str) -> None:
    gateway = fleet(spawn, db_url, {f"w{i}": 20 for i in range(4)}, scripted_plan(8, 60))
    victim = spawn.procs[4]  # w3's sim (procs: gateway, w0..w3)
    started = httpx.post(
        f"{gateway.url}/fleet/runs",
        json={"task": "planets", "max_subtasks": 8, "decompose": "always", **REWRITE},
    ).json()
    wait_for(
        gateway,
        started["id"],
        lambda v: any(d["neuron"] == "w3" and d["status"] == "active" for d in v["delegations"]),
    )
    victim.kill()
    view = wait_for(gateway, started["id"], lambda v: v["status"] != "running")
    assert view["status"] == "completed"
    assert all(d["status"] == "completed" and d["output"] for d in view["delegations"])
    moved = [d for d in view["delegations"] if d["attempts"] > 1]
    assert moved
    assert all(d["neuron"] != "w3" for d in moved)


def test_a_gateway_restart_resumes_without_recomputing(spawn: Spawner, db_url: str) -> None:
    gateway = fleet(spawn, db_url, {f"w{i}": 10 for i in range(2)}, scripted_plan(6, 30))
    started = httpx.post(
        f"{gateway.url}/fleet/runs",
        json={"task": "planets", "max_subtasks": 6, "decompose": "always", **REWRITE},
    ).json()
    before = wait_for(
        gateway,
        started["id"],
        lambda v: sum(d["status"] == "completed" for d in v["delegations"]) >= 2,
    )
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    done_before = {
        d["index"]: d["output"] for d in before["delegations"] if d["status"] == "completed"
    }
    again = spawn.gateway(db_url, probe_interval=1, port=gateway.port)
    view = wait_for(again, started["id"], lambda v: v["status"] != "running")
    assert view["status"] == "completed"
    assert all(d["status"] == "completed" for d in view["delegations"])
    timings = view["timings"]  # wall time across the restart, downtime included
    assert timings["total_s"] >= timings["decompose_s"] + timings["parallel_s"]
    assert view["schedule"]["efficiency"] <= 1.0
    for d in view["delegations"]:
        if d["index"] in done_before:
            assert (d["attempts"], d["output"]) == (1, done_before[d["index"]])


def test_a_run_can_be_cancelled_by_its_short_id(spawn: Spawner, db_url: str) -> None:
    gateway = fleet(spawn, db_url, {"w0": 10, "w1": 10}, scripted_plan(4, 80))
    started = httpx.post(
        f"{gateway.url}/fleet/runs", json={"task": "planets", "decompose": "always", **REWRITE}
    ).json()
    wait_for(
        gateway, started["id"], lambda v: any(d["status"] == "active" for d in v["delegations"])
    )
    short = started["id"][:8]
    result = run_cli("runs", "cancel", short, "--gateway", gateway.url)
    assert result.returncode == 0, result.stderr
    assert "cancelled" in result.stdout
    view = httpx.get(f"{gateway.url}/fleet/runs/{short}").json()
    assert (view["id"], view["status"], view["reason"]) == (
        started["id"],
        "failed",
        "cancelled by the operator",
    )
    statuses = {d["status"] for d in view["delegations"]}
    assert "cancelled" in statuses
    assert statuses <= {"completed", "cancelled"}
    again = run_cli("runs", "cancel", short, "--gateway", gateway.url)
    assert again.returncode == 1
    assert "already failed" in again.stderr


def test_a_brain_that_stalls_mid_plan_is_asked_again_elsewhere(spawn: Spawner, db_url: str) -> None:
    gateway = spawn.gateway(db_url, env={"GANGLION_IDLE_TIMEOUT_S": "1"})
    plan = scripted_plan(4, 20)
    stalls = ("--stall-rate", "1", "--stall-after-tokens", "2")
    staller = spawn.sim(20, model="llama3", extra=("--structured-reply", plan, *stalls))
    sound = spawn.sim(20, model="llama3", extra=("--structured-reply", plan))
    for name, sim in (("a0", staller), ("w1", sound)):  # a0 ranks first while speeds tie
        body = {"url": sim.url, "name": name}
        assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201
    started = httpx.post(
        f"{gateway.url}/fleet/runs", json={"task": "planets", "decompose": "always", **REWRITE}
    ).json()
    view = wait_for(gateway, started["id"], lambda v: v["status"] != "running")
    assert (view["status"], view["mode"]) == ("completed", "decomposed"), view["reason"]
    assert len(view["plan"]["subtasks"]) == 4
    assert all(d["status"] == "completed" and d["neuron"] == "w1" for d in view["delegations"])
    moved = sum(d["attempts"] > 1 for d in view["delegations"])
    stalled = httpx.get(f"{staller.url}/sim/stats").json()["totals"]["stalled"]
    assert stalled > moved  # the plan stalled on a0 too, and was written again by w1
