"""A run's events in memory: kept while it runs, so a subscriber joining mid-run sees them
from the start; released at its end; at most ``max_runs`` histories, none idle past
``idle_s``. Then through the gateway: orchestrated runs leave nothing behind, and a
subscriber whose run ended before it subscribed gets the ``done`` of the record."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ganglion.orchestra.events import Event, RunEvents
from ganglion.orchestra.run import Orchestra
from tests.fakes import gpu_and_cpu, in_process
from tests.monitor.conftest import EventStream

GUARD_S = 30.0  # a wait that only a bug exhausts: never asserted on


class Chunk:
    """An answer's text in an event, held weakly by the test to see when it is released."""

    def __init__(self, text: str) -> None:
        self.text = text


def answer(text: str) -> Event:
    return {"type": "answer", "text": Chunk(text)}


DONE: Event = {"type": "done", "run": {"status": "completed"}}


async def read(events: RunEvents, run_id: str) -> list[Event]:
    with events.subscribe(run_id) as followed:
        return [event async for event in followed]


async def test_a_finished_runs_history_is_released() -> None:
    events = RunEvents()
    chunks = [Chunk(f"part {n}") for n in range(3)]
    released = [weakref.ref(chunk) for chunk in chunks]
    for chunk in chunks:
        events.publish("r1", {"type": "answer", "text": chunk})
    events.publish("r2", answer("another run, still running"))
    del chunk, chunks
    gc.collect()
    assert all(ref() is not None for ref in released)  # kept while the run runs

    events.publish("r1", {"type": "run", "run": {"status": "completed"}})
    events.publish("r1", DONE)
    gc.collect()
    assert [ref() for ref in released] == [None, None, None]
    assert events.runs == 1  # r2's, still running


async def test_a_subscriber_joining_mid_run_sees_every_event_from_the_start() -> None:
    events = RunEvents()
    events.publish("r1", {"type": "run", "run": {"status": "running"}})
    events.publish("r1", answer("Hello, "))
    with events.subscribe("r1") as followed:
        events.publish("r1", answer("world."))
        events.publish("r1", DONE)
        seen = [event async for event in followed]
    assert [e["type"] for e in seen] == ["run", "answer", "answer", "done"]
    assert [e["text"].text for e in seen if e["type"] == "answer"] == ["Hello, ", "world."]
    assert (events.runs, events.readers) == (0, 0)


async def test_subscribers_read_to_the_end_after_the_history_is_dropped() -> None:
    events = RunEvents()
    events.publish("r1", answer("a"))
    slow = asyncio.create_task(read(events, "r1"))
    await asyncio.sleep(0)  # subscribed, nothing read yet
    events.publish("r1", answer("b"))
    events.publish("r1", DONE)
    assert events.runs == 0
    seen = await asyncio.wait_for(slow, GUARD_S)
    assert [e["type"] for e in seen] == ["answer", "answer", "done"]
    assert events.readers == 0


async def test_a_listener_sees_every_event_of_every_run() -> None:
    events = RunEvents()
    heard: list[tuple[str, str]] = []
    events.listen(lambda run_id, event: heard.append((run_id, event["type"])))
    events.publish("r1", answer("a"))
    events.publish("r2", DONE)
    assert heard == [("r1", "answer"), ("r2", "done")]


async def test_at_most_max_runs_histories_are_kept_the_least_recently_active_dropped() -> None:
    events = RunEvents(max_runs=3)
    for run_id in ("r1", "r2", "r3"):
        events.publish(run_id, answer(run_id))
    events.publish("r1", answer("r1 again"))  # r2 is now the least recently active
    events.publish("r4", answer("r4"))
    assert events.runs == 3
    assert [e["text"].text for e in await replay(events, "r1")] == ["r1", "r1 again"]
    assert await replay(events, "r2") == []


async def test_a_history_without_an_event_for_idle_s_is_dropped() -> None:
    now = [0.0]
    events = RunEvents(idle_s=60.0, clock=lambda: now[0])
    events.publish("lost", answer("a run another replica took over"))
    now[0] = 30.0
    events.publish("busy", answer("early"))
    now[0] = 61.0
    events.publish("busy", answer("late"))
    assert events.runs == 1
    assert await replay(events, "lost") == []
    assert len(await replay(events, "busy")) == 2


async def replay(events: RunEvents, run_id: str) -> list[Event]:
    """The history a subscriber joining now gets at once (ending the run to stop reading)."""
    with events.subscribe(run_id) as followed:
        events.publish(run_id, DONE)
        return [event async for event in followed][:-1]


# through the gateway


Gateway = tuple[FastAPI, httpx.AsyncClient]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with in_process(gpu_and_cpu(), tmp_path / "g.db") as (app, client):
        await app.state.gateway.registry.add("http://gpu:11434", name="gpu", node="rig")
        await app.state.gateway.registry.add("http://cpu:11434", name="cpu", node="box")
        yield app, client


async def test_finished_runs_leave_no_history_behind_followed_or_not(gateway: Gateway) -> None:
    app, client = gateway
    orchestra: Orchestra = app.state.gateway.orchestra
    finals = []
    for number in range(8):
        body = {"task": f"Task {number}", "decompose": ("never", "always")[number % 2]}
        started = await client.post("/fleet/runs", json=body)
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        if number % 4 < 2:  # followed to the end
            async with EventStream(app, f"/fleet/runs/{run_id}/events") as stream:
                kind, data = await stream.next(GUARD_S)
                while kind != "done":
                    kind, data = await stream.next(GUARD_S)
            finals.append(data["run"]["status"])
        else:  # nobody follows
            await asyncio.wait_for(orchestra.wait(run_id), GUARD_S)
            finals.append((await client.get(f"/fleet/runs/{run_id}")).json()["status"])
    assert finals == ["completed"] * 8
    assert (orchestra.events.runs, orchestra.events.readers) == (0, 0)


async def test_a_run_that_ends_before_its_subscriber_subscribes_sends_its_done(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = gateway
    orchestra: Orchestra = app.state.gateway.orchestra
    started = await client.post("/fleet/runs", json={"task": "Say hi", "decompose": "never"})
    run_id = started.json()["id"]
    await asyncio.wait_for(orchestra.wait(run_id), GUARD_S)
    assert orchestra.events.runs == 0
    real = orchestra.view
    reads = 0

    async def first_still_running(wanted: str) -> dict[str, Any] | None:
        """The read before the subscription saw the run running; it ended just after."""
        nonlocal reads
        reads += 1
        view = await real(wanted)
        return view if view is None or reads > 1 else view | {"status": "running"}

    monkeypatch.setattr(orchestra, "view", first_still_running)
    async with EventStream(app, f"/fleet/runs/{run_id}/events") as stream:
        kind, data = await stream.next(GUARD_S)
    assert (kind, data["run"]["status"]) == ("done", "completed")
    assert data["run"]["answer"]
