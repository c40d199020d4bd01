"""The stitched pipeline end to end: a real gateway, simulated workers serving ``llama3``, and
a simulated brain serving ``brain-model`` that answers the outline request with a scripted
outline. GenerationTimings are compared with each other, never against a clock."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from ganglion.local.sim.answers import json_pieces
from ganglion.orchestra import stitch
from tests.conftest import Proc, Spawner, run_cli
from tests.orchestra.test_runs_e2e import wait_for

SECTIONS = ["Inner planets", "Gas giants", "Ice giants", "Dwarf planets"]


def outline(sections: list[Any]) -> str:
    return json.dumps({"subtasks": sections})


def fleet(
    spawn: Spawner,
    db_url: str,
    workers: dict[str, float],
    *,
    brain_tps: float = 20,
    script: str | None = None,
) -> tuple[Proc, dict[str, Proc]]:
    gateway = spawn.gateway(db_url, probe_interval=1)
    sims = {name: spawn.sim(tps, model="llama3") for name, tps in workers.items()}
    reply = ("--structured-reply", script or outline(SECTIONS))
    sims["brain"] = spawn.sim(brain_tps, model="brain-model", extra=reply)
    for name, sim in sims.items():
        body = {"url": sim.url, "name": name, "node": name}
        assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201
    httpx.post(f"{gateway.url}/fleet/bench", json={"max_tokens": 16}, timeout=120)
    return gateway, sims


def start(gateway: Proc, **fields: Any) -> str:
    body = {"task": "Describe the planets", "model": "llama3", "brain": "brain-model"}
    answer = httpx.post(f"{gateway.url}/fleet/runs", json=body | fields)
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["id"]
    return run_id


def finished(gateway: Proc, run_id: str) -> dict[str, Any]:
    return wait_for(gateway, run_id, lambda v: v["status"] != "running", within=180)


def sections_asked(sims: dict[str, Proc]) -> Counter[str]:
    """How many times each section was asked for, over the whole fleet (the sims' logs)."""
    count: Counter[str] = Counter()
    for sim in sims.values():
        for entry in httpx.get(f"{sim.url}/sim/log").json():
            prompt = entry.get("prompt", "")
            if prompt.startswith("Write section"):
                count[prompt.split(",")[0]] += 1
    return count


def test_a_stitched_run_streams_the_outline_and_sizes_the_parts(
    spawn: Spawner, db_url: str
) -> None:
    gateway, _ = fleet(spawn, db_url, {f"w{i}": 20 for i in range(4)})
    result = run_cli(
        "run",
        "Describe the planets",
        "--brain",
        "brain-model",
        "--model",
        "llama3",
        "--answer-tokens",
        "360",
        "--decompose",
        "always",
        "--json",
        "--gateway",
        gateway.url,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert (view["status"], view["mode"], view["synthesis"]) == (
        "completed",
        "decomposed",
        "stitch",
    )
    parts = view["delegations"]
    assert 2 <= len(parts) <= 4
    assert all(d["status"] == "completed" and d["tokens"] == d["expected_tokens"] for d in parts)
    assert len({d["neuron"] for d in parts}) == len(parts)  # one part per worker
    budgets = [d["expected_tokens"] for d in parts]
    assert budgets == sorted(budgets, reverse=True)  # a later entry starts later: less to do
    timings = view["timings"]
    # a pipeline: parts start before the outline is done, and the answer before either ends
    assert min(d["start_s"] for d in parts) < timings["decompose_s"]
    assert timings["first_token_s"] < timings["decompose_s"]
    assert timings["total_s"] < timings["decompose_s"] + timings["parallel_s"]
    assert view["schedule"]["lower_bound_s"] <= timings["parallel_s"]
    assert 0 < view["schedule"]["efficiency"] <= 1.0
    assert timings["predicted_finish_s"] > 0
    answer = view["answer"]
    headings = [answer.index(f"## {s}") for s in SECTIONS[: len(parts)]]
    assert headings == sorted(headings)  # in plan order
    assert not answer.startswith("##")  # an opening comes first
    assert view["plan"]["opening"]
    assert view["plan"]["closing"]
    assert answer.rstrip().endswith(view["plan"]["closing"].strip())


def test_the_answer_streams_in_order_and_whole(spawn: Spawner, db_url: str) -> None:
    gateway, _ = fleet(spawn, db_url, {f"w{i}": 20 for i in range(3)})
    run_id = start(gateway, decompose="always", answer_tokens=240)
    streamed: list[str] = []
    with httpx.stream("GET", f"{gateway.url}/fleet/runs/{run_id}/events", timeout=120) as events:
        kind = ""
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "answer":
                streamed.append(json.loads(line.removeprefix("data: "))["text"])
    view = finished(gateway, run_id)
    assert view["status"] == "completed"
    assert "".join(streamed).strip() == view["answer"]
    first_heading = next(n for n, text in enumerate(streamed) if "## " in text)
    assert first_heading > 0  # the opening streamed before the first part


def test_a_bad_entry_is_skipped_and_the_others_run(spawn: Spawner, db_url: str) -> None:
    script = outline(["Inner planets", {"heading": "no task here"}, "Gas giants"])
    gateway, _ = fleet(spawn, db_url, {f"w{i}": 20 for i in range(3)}, script=script)
    view = finished(gateway, start(gateway, decompose="always", answer_tokens=240))
    assert (view["status"], view["mode"]) == ("completed", "decomposed")
    assert view["plan"]["skipped"] == [{"index": 1, "reason": "subtask 2 has no task text"}]
    assert [s["heading"] for s in view["plan"]["subtasks"]] == ["Inner planets", "Gas giants"]
    assert "## Gas giants" in view["answer"]


def test_the_brain_is_let_go_once_every_planned_part_runs(spawn: Spawner, db_url: str) -> None:
    """The brain writes eight headings where two were asked for: the outline is read only
    until both parts are dispatched, and its stream is closed, so the brain is free for the
    closing instead of writing six entries nobody reads."""
    long_outline = outline([f"Section number {n} of a long outline" for n in range(1, 9)])
    gateway, sims = fleet(spawn, db_url, {"w0": 20, "w1": 20}, script=long_outline)
    view = finished(gateway, start(gateway, decompose="always", max_subtasks=2, answer_tokens=200))
    assert (view["status"], view["mode"]) == ("completed", "decomposed")
    assert len(view["plan"]["subtasks"]) == 2
    assert "skipped" not in view["plan"]  # the six extra entries were never read
    brain = httpx.get(f"{sims['brain'].url}/sim/stats").json()["totals"]
    whole = len(json_pieces(json.loads(long_outline)))
    assert brain["output_tokens"] < whole  # the outline cut short, and the closing, together


def test_killing_a_worker_mid_run_moves_its_part(spawn: Spawner, db_url: str) -> None:
    gateway, sims = fleet(spawn, db_url, {f"w{i}": 10 for i in range(3)})
    run_id = start(gateway, decompose="always", answer_tokens=400)
    before = wait_for(
        gateway, run_id, lambda v: any(d["status"] == "active" for d in v["delegations"] or [])
    )
    victim = next(d["neuron"] for d in before["delegations"] if d["status"] == "active")
    sims[victim].kill()
    view = finished(gateway, run_id)
    assert view["status"] == "completed", view["reason"]
    assert all(d["status"] == "completed" and d["output"] for d in view["delegations"])
    moved = [d for d in view["delegations"] if d["attempts"] > 1]
    assert moved
    assert all(d["neuron"] != victim for d in moved)
    for section in {s["heading"] for s in view["plan"]["subtasks"]}:
        assert view["answer"].count(f"## {section}") == 1


def test_a_run_that_fails_stops_its_closing(spawn: Spawner, db_url: str) -> None:
    """Every worker dies while the parts run: a part fails for good, so the run fails at
    once, and the brain's closing, still being written, is cancelled with it."""
    gateway, sims = fleet(spawn, db_url, {"w0": 10, "w1": 10}, brain_tps=2)
    run_id = start(gateway, decompose="always", max_subtasks=2, answer_tokens=400)
    wait_for(gateway, run_id, lambda v: v["timeline"]["closing"] is not None, within=60)
    for name in ("w0", "w1"):
        sims[name].kill()
    view = finished(gateway, run_id)
    assert view["status"] == "failed", (view["timeline"], view["delegations"])
    assert "failed after" in view["reason"]
    stats = f"{sims['brain'].url}/sim/stats"
    deadline = time.monotonic() + 60
    while httpx.get(stats).json()["active"] and time.monotonic() < deadline:
        time.sleep(0.2)
    written = httpx.get(stats).json()["totals"]["output_tokens"]
    headings = len(json_pieces(json.loads(outline(SECTIONS[:2]))))
    assert written < headings + stitch.CLOSING_TOKENS  # the closing (12 s at 2 tok/s) was cut


def test_a_gateway_killed_mid_run_resumes_and_keeps_each_part_once(
    spawn: Spawner, db_url: str
) -> None:
    # The parts are sized to finish together, so the moment to kill is after them: a slow
    # brain is still writing the closing. Parts still running then are asked at most twice.
    gateway, sims = fleet(spawn, db_url, {"w0": 40, "w1": 8, "w2": 8}, brain_tps=3)
    run_id = start(gateway, decompose="always", answer_tokens=400)
    before = wait_for(
        gateway,
        run_id,
        lambda v: (
            v["status"] == "running"
            and any(d["status"] == "completed" for d in v["delegations"] or [])
        ),
    )
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    done = {d["index"]: d["output"] for d in before["delegations"] if d["status"] == "completed"}

    again = spawn.gateway(db_url, probe_interval=1, port=gateway.port)
    view = finished(again, run_id)
    assert view["status"] == "completed", view["reason"]
    for d in view["delegations"]:
        if d["index"] in done:  # reused, not asked again
            assert (d["attempts"], d["output"]) == (1, done[d["index"]])
    asked = sections_asked(sims)
    for d in view["delegations"]:
        times = asked[f"Write section {d['index'] + 1}"]
        if d["index"] in done:
            assert times == 1, asked  # finished before the kill: never asked again
        else:
            assert times in (1, 2), asked  # cut by the kill: asked once more, at most
    for section in {s["heading"] for s in view["plan"]["subtasks"]}:
        assert view["answer"].count(f"## {section}") == 1


def test_a_brain_that_stalls_mid_outline_is_asked_again_elsewhere(
    spawn: Spawner, db_url: str
) -> None:
    gateway = spawn.gateway(db_url, env={"GANGLION_IDLE_TIMEOUT_S": "1"})
    reply = ("--structured-reply", outline(SECTIONS))
    stalls = ("--stall-rate", "1", "--stall-after-tokens", "2")
    sims = {
        "a-brain": spawn.sim(20, model="brain-model", extra=(*reply, *stalls)),
        "z-brain": spawn.sim(20, model="brain-model", extra=reply),
        "w0": spawn.sim(20, model="llama3"),
        "w1": spawn.sim(20, model="llama3"),
    }
    for name, sim in sims.items():  # a-brain ranks first while speeds tie
        body = {"url": sim.url, "name": name}
        assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201
    view = finished(gateway, start(gateway, decompose="always", answer_tokens=240))
    assert (view["status"], view["mode"]) == ("completed", "decomposed"), view["reason"]
    stalled = httpx.get(f"{sims['a-brain'].url}/sim/stats").json()["totals"]["stalled"]
    assert stalled >= 1  # the outline stalled there, and was written again by z-brain
    assert [s["heading"] for s in view["plan"]["subtasks"]] == SECTIONS[: len(view["delegations"])]


@pytest.mark.parametrize(("brain_tps", "split"), [(4, False), (90, True)])
def test_auto_splits_only_when_the_pipeline_is_predicted_to_win(
    spawn: Spawner, db_url: str, brain_tps: float, split: bool
) -> None:
    gateway, _ = fleet(spawn, db_url, {"fast": 60, "w1": 60, "w2": 60}, brain_tps=brain_tps)
    view = finished(gateway, start(gateway, answer_tokens=300))
    assert view["status"] == "completed"
    if split:
        assert view["mode"] == "decomposed"
        assert view["timings"]["predicted_finish_s"] < 300 / 60
    else:  # a 4 tok/s brain would take longer to outline than a worker takes to answer
        assert view["mode"] == "direct"
        assert view["reason"].startswith("splitting would take about")
        assert "alone" in view["reason"]


def test_a_restart_between_an_entry_and_its_delegation_still_runs_that_part(
    spawn: Spawner, tmp_path: Path
) -> None:
    """The plan is saved before each entry's delegation: a run the gateway left with outline
    entries but no delegation rows for them runs those parts when it is adopted."""
    from ganglion.store import Store
    from ganglion.store import runs as records
    from ganglion.store.schema import RunRow

    db_url = f"sqlite:///{tmp_path / 'left.db'}"
    gateway, _ = fleet(spawn, db_url, {"w0": 40, "w1": 40})
    entries = [{"task": s, "heading": s, "expected_tokens": 40} for s in SECTIONS[:2]]
    plan = {"subtasks": entries, "planned": 2, "complete": False, "opener": "w0"}
    timings = {"synthesis": "stitch", "answer_tokens": 200, "max_subtasks": 2}
    store = Store.open(db_url)
    try:
        records.add_run(
            store,
            RunRow(
                id="left-by-a-crash",
                task="Describe the planets",
                status="running",
                brain="brain-model",
                model="llama3",
                policy="speed",
                mode="decomposed",
                plan=plan,
                timings=timings,
                owner="a-replica-that-died",
                lease_until=0.0,
            ),
        )
    finally:
        store.close()
    view = finished(gateway, "left-by-a-crash")
    assert view["status"] == "completed", view["reason"]
    assert [d["index"] for d in view["delegations"]] == [0, 1]
    assert all(d["status"] == "completed" and d["output"] for d in view["delegations"])
    for section in SECTIONS[:2]:
        assert view["answer"].count(f"## {section}") == 1
