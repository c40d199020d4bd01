"""The watches on a dispatcher's waits: one timer and one offline callback per neuron for all
of them, each wait still ending at its own timeout, or at once when its neuron goes offline.
(The dispatcher's routing and failover are tested through the gateway: tests/gateway.)"""

from __future__ import annotations

import asyncio

import pytest

from ganglion.dispatch import Watches
from ganglion.errors import NeuronUnreachable

GUARD_S = 30.0
"""Only stops a broken test from hanging; nothing here waits that long when it works."""


async def never() -> None:
    await asyncio.Event().wait()


async def test_a_wait_ends_at_its_own_timeout_beside_a_longer_one() -> None:
    watches = Watches()
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    patient = watches.watch("gpu", lost, timeout_s=300.0)
    hasty = watches.watch("gpu", lost, timeout_s=0.01)
    waiting = asyncio.create_task(patient.wait(never()))
    await asyncio.sleep(0)  # the timer is set for the long wait first
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hasty.wait(never()), GUARD_S)
    assert not waiting.done()  # the other wait goes on
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):  # a cancellation not the watch's stays one
        await waiting


async def test_a_wait_that_ends_in_time_is_not_cut_and_the_next_gets_its_own_limit() -> None:
    watches = Watches()
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    watch = watches.watch("gpu", lost, timeout_s=300.0)
    assert await watch.wait(asyncio.sleep(0.02, "first")) == "first"
    watch.timeout_s = 0.01  # as the idle timeout follows the first-byte one
    assert await watch.wait(asyncio.sleep(0, "second")) == "second"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(watch.wait(never()), GUARD_S)
    watch.close()


async def test_going_offline_cuts_every_wait_on_that_neuron_and_no_other() -> None:
    watches = Watches()
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[str] = loop.create_future()
    fine: asyncio.Future[str] = loop.create_future()
    on_gone = [watches.watch("cpu", gone, timeout_s=300.0) for _ in range(3)]
    elsewhere = watches.watch("gpu", fine, timeout_s=300.0)
    waits = [asyncio.create_task(watch.wait(never())) for watch in on_gone]
    other = asyncio.create_task(elsewhere.wait(never()))
    idle = watches.watch("cpu", gone, timeout_s=300.0)  # between two waits when it happens
    await asyncio.sleep(0)
    gone.set_result("2 probes failed in a row: connection refused")
    for wait in waits:
        with pytest.raises(NeuronUnreachable, match="cpu went offline: 2 probes failed"):
            await asyncio.wait_for(wait, GUARD_S)
    with pytest.raises(NeuronUnreachable, match="connection refused"):
        await idle.wait(never())  # its next wait fails at once
    assert not other.done()
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other


async def test_what_the_watches_hold_is_let_go() -> None:
    watches = Watches()
    loop = asyncio.get_running_loop()
    neurons: list[asyncio.Future[str]] = [loop.create_future() for _ in range(5)]
    for lost in neurons:
        watch = watches.watch("n", lost, timeout_s=0.01)
        assert await watch.wait(asyncio.sleep(0, "answer")) == "answer"
        watch.close()
    hanging = watches.watch("n", neurons[0], timeout_s=0.01)
    with pytest.raises(TimeoutError):  # the timer fires, and drops the neurons now idle
        await asyncio.wait_for(hanging.wait(never()), GUARD_S)
    hanging.close()
    assert list(watches._groups) == [neurons[0]]
    neurons[0].set_result("gone")
    await asyncio.sleep(0)
    assert not watches._groups
