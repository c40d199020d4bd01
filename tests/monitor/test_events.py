"""``GET /fleet/events``: the snapshot, live changes, removals, coalescing, slow clients."""

from __future__ import annotations

import asyncio

from ganglion.gateway.events import Event, FleetEvents, Mailbox
from ganglion.neurons.base import TokenStats
from tests.monitor.conftest import EventStream, InProcess


async def add_two(app: InProcess) -> None:
    registry = app.gateway.registry
    await registry.add("http://gpu:11434", name="gpu", node="rig")
    await registry.add("http://cpu:11434", name="cpu", node="tower")


async def test_a_client_first_gets_a_snapshot_of_every_neuron(gateway_app: InProcess) -> None:
    await add_two(gateway_app)
    stats = TokenStats(output_tokens=90, decode_s=1.0, wall_s=1.0)
    await gateway_app.gateway.registry.record_success(
        gateway_app.gateway.registry.get("gpu"), "llama3", stats
    )
    async with EventStream(gateway_app.app) as stream:
        kind, data = await stream.next()
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert kind == "snapshot"
    views = {view["name"]: view for view in data["neurons"]}
    assert set(views) == {"gpu", "cpu"}
    assert views["gpu"]["node"] == "rig"
    assert views["gpu"]["status"] == "active"
    assert views["gpu"]["tokens_per_second"] == 90.0
    assert views["gpu"]["best_tokens_per_second"] == 90.0
    assert views["cpu"]["best_tokens_per_second"] is None


async def test_suspend_resume_and_add_are_sent_as_neuron_events(gateway_app: InProcess) -> None:
    await add_two(gateway_app)
    registry = gateway_app.gateway.registry
    async with EventStream(gateway_app.app) as stream:
        assert (await stream.next())[0] == "snapshot"
        await gateway_app.client.post("/fleet/neurons/gpu/suspend")
        kind, view = await stream.next(1.0)
        assert (kind, view["name"], view["status"]) == ("neuron", "gpu", "suspended")
        assert "suspended by the operator" in view["reason"]
        await registry.resume("gpu")
        kind, view = await stream.next(1.0)
        assert (kind, view["name"], view["status"]) == ("neuron", "gpu", "active")
        gateway_app.fleet.add("new:11434")
        await registry.add("http://new:11434", name="new")
        kind, view = await stream.next(1.0)
        assert (kind, view["name"], view["is_active"]) == ("neuron", "new", True)


async def test_a_removed_neuron_is_sent_as_removed(gateway_app: InProcess) -> None:
    await add_two(gateway_app)
    async with EventStream(gateway_app.app) as stream:
        await stream.next()
        response = await gateway_app.client.delete("/fleet/neurons/cpu")
        assert response.status_code == 204
        assert await stream.next(1.0) == ("removed", {"name": "cpu"})


async def test_a_burst_of_changes_is_coalesced_to_the_latest_state(
    gateway_app: InProcess,
) -> None:
    await add_two(gateway_app)
    registry = gateway_app.gateway.registry
    gpu = registry.get("gpu")
    async with EventStream(gateway_app.app) as stream:
        await stream.next()
        for _ in range(30):  # 60 changes in about 0.6 s
            async with registry.track(gpu):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)
        events = await stream.drain(quiet=0.6)
    about_gpu = [view for kind, view in events if kind == "neuron" and view["name"] == "gpu"]
    assert 2 <= len(about_gpu) <= 6, len(about_gpu)  # one per 200 ms at most, not 60
    assert about_gpu[-1]["in_flight"] == 0


async def test_a_quiet_stream_sends_keep_alive_comments(gateway_app: InProcess) -> None:
    gateway_app.app.state.fleet_events.keepalive_s = 0.1
    async with EventStream(gateway_app.app) as stream:
        await stream.next()
        await asyncio.sleep(0.35)
        await stream.drain(quiet=0.05)
    assert "keep-alive" in stream.comments


async def test_a_client_that_leaves_is_forgotten(gateway_app: InProcess) -> None:
    hub: FleetEvents = gateway_app.app.state.fleet_events
    async with EventStream(gateway_app.app) as stream:
        await stream.next()
        assert hub.clients == 1
    assert hub.clients == 0


def test_a_mailbox_keeps_only_the_newest_event_per_topic() -> None:
    mailbox = Mailbox(limit=10)
    for in_flight in range(5):
        mailbox.offer("neuron/a", Event("neuron", {"name": "a", "in_flight": in_flight}))
    mailbox.offer("neuron/b", Event("removed", {"name": "b"}))
    resync, events = mailbox.take()
    assert not resync
    assert events == [
        Event("neuron", {"name": "a", "in_flight": 4}),
        Event("removed", {"name": "b"}),
    ]
    assert mailbox.take() == (False, [])


def test_a_mailbox_that_overflows_asks_for_a_fresh_snapshot() -> None:
    mailbox = Mailbox(limit=3)
    for index in range(4):
        mailbox.offer(f"run/{index}", Event("run", {"id": index}))
    resync, _ = mailbox.take()
    assert resync


def test_events_are_encoded_as_server_sent_events() -> None:
    encoded = Event("removed", {"name": "gpu"}).encode()
    assert encoded == 'event: removed\ndata: {"name":"gpu"}\n\n'
