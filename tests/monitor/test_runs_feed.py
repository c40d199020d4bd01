"""Runs on ``GET /fleet/events``: the ``run`` event, its coalescing, and the timeline that
the dashboard's Gantt chart draws from a run's view."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from ganglion.gateway.events import FleetEvents, RunFeed, compact_run
from ganglion.orchestra.view import RunView, run_view, view_of
from ganglion.store.schema import DelegationRow, RunRow
from tests.monitor.conftest import EventStream, InProcess

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_a_run_is_published_on_the_fleet_stream(gateway_app: InProcess) -> None:
    await gateway_app.gateway.registry.add("http://gpu:11434", name="gpu", node="rig")
    async with EventStream(gateway_app.app) as stream:
        assert (await stream.next())[0] == "snapshot"
        started = await gateway_app.client.post(
            "/fleet/runs", json={"task": "Say hello", "decompose": "never"}
        )
        assert started.status_code == 202
        run_id = started.json()["id"]
        runs: list[dict[str, Any]] = []
        while not runs or runs[-1]["status"] == "running":
            kind, data = await stream.next(5.0)
            if kind == "run":
                runs.append(data)
    assert {view["id"] for view in runs} == {run_id}
    assert len(runs) <= 4  # started, direct, done: coalesced, never one per token
    done = runs[-1]
    assert (done["status"], done["mode"]) == ("completed", "direct")
    assert "answer" not in done  # texts stay out of the stream: GET /fleet/runs/ID has them
    assert done["timings"]["total_s"] is not None
    line = done["timeline"]
    assert line["decompose"] is None
    assert line["parallel"]["end_s"] is not None
    assert line["elapsed_s"] >= line["parallel"]["end_s"]
    full = (await gateway_app.client.get(f"/fleet/runs/{run_id}")).json()
    assert full["answer"]
    assert full["timeline"] == line


async def test_the_feed_coalesces_a_burst_and_ends_on_the_newest_state(
    gateway_app: InProcess,
) -> None:
    hub: FleetEvents = gateway_app.app.state.fleet_events
    reads = 0

    async def view(run_id: str) -> dict[str, Any]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.005)  # a store read
        return {"id": run_id, "read": reads, "delegations": []}

    feed = RunFeed(hub, view, coalesce_s=0.1)
    feed.changed("r1", {"type": "delegation", "index": 0})
    await asyncio.sleep(0.05)
    assert reads == 0  # nobody is watching: nothing is read
    async with EventStream(gateway_app.app) as stream:
        await stream.next()
        for index in range(40):  # 40 changes in about 0.4 s
            feed.changed("r1", {"type": "delegation", "index": index % 6})
            feed.changed("r1", {"type": "answer", "text": "ignored"})
            await asyncio.sleep(0.01)
        events = await stream.drain(quiet=0.5)
    runs = [data for kind, data in events if kind == "run"]
    assert 2 <= len(runs) <= 8, len(runs)
    assert reads <= 8
    assert runs[-1]["read"] == reads  # the last state read is the last one sent
    await feed.close()
    feed.changed("r1", {"type": "delegation", "index": 0})
    assert reads == runs[-1]["read"]


def test_a_compact_run_leaves_the_texts_out() -> None:
    view = {"id": "r", "answer": "long", "delegations": [{"index": 0, "output": "x", "tokens": 3}]}
    assert compact_run(view) == {"id": "r", "delegations": [{"index": 0, "tokens": 3}]}


# --- the timeline in a run's view


def run_row(**values: Any) -> RunRow:
    defaults: dict[str, Any] = {
        "id": "r",
        "task": "t",
        "status": "running",
        "plan": None,
        "timings": {},
        "created_at": T0,
    }
    return RunRow(**(defaults | values))


def delegation(index: int, status: str, start: float | None, end: float | None) -> DelegationRow:
    return DelegationRow(
        run_id="r",
        index=index,
        subtask=f"part {index}",
        expected_tokens=80,
        neuron=f"w{index % 2}",
        status=status,
        attempts=1 if start is not None else 0,
        started_at=None if start is None else at(start),
        finished_at=None if end is None else at(end),
    )


PLAN = {"subtasks": [{"task": "part 0", "expected_tokens": 80}]}


def test_while_the_brain_plans_only_the_decomposition_is_under_way() -> None:
    line = run_view(run_row(), [], now=at(1.5))["timeline"]
    assert line == {
        "elapsed_s": 1.5,
        "first_token_s": None,
        "decompose": {"start_s": 0.0, "end_s": None},
        "parallel": None,
        "synthesize": None,
        "opening": None,
        "closing": None,
    }


def test_during_the_parallel_phase_delegations_carry_their_times() -> None:
    row = run_row(mode="decomposed", plan=PLAN, timings={"decompose_s": 2.0})
    rows = [delegation(0, "completed", 2.1, 4.0), delegation(1, "active", 2.2, None)]
    view = run_view(row, rows, now=at(5.0))
    line = view["timeline"]
    assert line["decompose"] == {"start_s": 0.0, "end_s": 2.0}
    assert line["parallel"] == {"start_s": 2.1, "end_s": None}
    assert line["synthesize"] is None
    first, second = view["delegations"]
    assert (first["start_s"], first["end_s"]) == (2.1, 4.0)
    assert first["started_at"] == at(2.1).isoformat()
    assert (second["start_s"], second["end_s"]) == (2.2, None)


def test_once_every_delegation_is_done_the_synthesis_is_under_way() -> None:
    row = run_row(mode="decomposed", plan=PLAN, timings={"decompose_s": 2.0})
    rows = [delegation(0, "completed", 2.1, 4.0), delegation(1, "completed", 2.2, 4.5)]
    line = run_view(row, rows, now=at(5.0))["timeline"]
    assert line["parallel"] == {"start_s": 2.1, "end_s": 4.5}
    assert line["synthesize"] == {"start_s": 4.5, "end_s": None}


def test_the_parallel_phase_starts_when_the_orchestra_recorded_it() -> None:
    timings = {"decompose_s": 2.0, "parallel_started_at": at(2.05).timestamp(), "parallel_s": 2.5}
    row = run_row(mode="decomposed", plan=PLAN, timings=timings)
    rows = [delegation(0, "completed", 2.1, 4.0), delegation(1, "completed", 2.2, 4.5)]
    line = run_view(row, rows, now=at(5.0))["timeline"]
    assert line["parallel"] == {"start_s": 2.05, "end_s": 4.55}
    assert line["synthesize"] == {"start_s": 4.55, "end_s": None}


def test_a_finished_run_takes_its_measured_phases() -> None:
    timings = {"decompose_s": 2.0, "parallel_s": 2.5, "synthesize_s": 1.0, "total_s": 5.7}
    row = run_row(
        status="completed", mode="decomposed", plan=PLAN, timings=timings, finished_at=at(5.7)
    )
    rows = [delegation(0, "completed", 2.1, 4.0), delegation(1, "completed", 2.2, 4.5)]
    line = run_view(row, rows, now=at(99))["timeline"]
    assert line["elapsed_s"] == 5.7
    assert line["parallel"] == {"start_s": 2.1, "end_s": 4.6}
    assert line["synthesize"] == {"start_s": 4.6, "end_s": 5.7}


def test_a_direct_run_has_no_decomposition_and_no_synthesis() -> None:
    timings = {"decompose_s": 0.0, "parallel_s": 3.0, "synthesize_s": 0.0, "total_s": 3.1}
    row = run_row(status="completed", mode="direct", timings=timings, finished_at=at(3.1))
    line = run_view(row, [], now=at(99))["timeline"]
    assert line["decompose"] is None
    assert line["parallel"] == {"start_s": 0.0, "end_s": 3.0}
    assert line["synthesize"] is None


def test_a_stitched_run_shows_its_opening_and_closing_beside_the_parts() -> None:
    timings = {
        "decompose_s": 3.0,
        "parallel_started_at": at(0.8).timestamp(),
        "first_token_s": 0.9,
        "opening": {"start_s": 0.5, "end_s": 1.4, "neuron": "w1"},
        "closing": {"start_s": 3.0, "end_s": None, "neuron": None},
        "synthesis": "stitch",
    }
    row = run_row(mode="decomposed", plan=PLAN, timings=timings)
    rows = [delegation(0, "completed", 0.8, 2.5), delegation(1, "active", 1.6, None)]
    view = run_view(row, rows, now=at(3.5))
    line = view["timeline"]
    assert line["opening"] == {"start_s": 0.5, "end_s": 1.4, "neuron": "w1"}
    assert line["closing"] == {"start_s": 3.0, "end_s": None, "neuron": None}
    assert line["decompose"] == {"start_s": 0.0, "end_s": 3.0}  # the outline, overlapping
    assert line["first_token_s"] == 0.9
    assert view["synthesis"] == "stitch"
    assert "opening" not in view["timings"]  # the spans are the timeline's, not timings'


def test_a_rewrite_run_has_no_opening_or_closing() -> None:
    row = run_row(mode="decomposed", plan=PLAN, timings={"decompose_s": 2.0})
    line = run_view(row, [delegation(0, "active", 2.1, None)], now=at(3.0))["timeline"]
    assert (line["opening"], line["closing"]) == (None, None)


def test_the_view_is_one_typed_model_and_its_json_keeps_every_key() -> None:
    row = run_row(status="completed", mode="direct", finished_at=at(1.0))
    typed = view_of(row, [], now=at(9))
    assert isinstance(typed, RunView)
    assert typed.timeline.elapsed_s == 1.0
    keys = set(run_view(row, []))
    assert keys >= {"id", "status", "timings", "schedule", "baseline", "timeline", "plan"}
    assert run_view(row, [])["schedule"] == {
        "policy": None,
        "lower_bound_s": None,
        "predicted_s": None,
        "efficiency": None,
    }
    assert RunView.model_validate(run_view(row, [])) == typed


def test_times_without_a_zone_are_read_as_utc() -> None:
    naive = T0.replace(tzinfo=None)
    row = run_row(mode="decomposed", plan=PLAN, timings={"decompose_s": 1.0}, created_at=naive)
    rows = [delegation(0, "active", 1.5, None)]
    rows[0].started_at = naive + timedelta(seconds=1.5)
    view = run_view(row, rows, now=at(2.0))
    assert view["timeline"]["elapsed_s"] == 2.0
    assert view["delegations"][0]["start_s"] == 1.5
    assert view["delegations"][0]["started_at"].endswith("+00:00")
