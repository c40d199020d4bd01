"""The prober's rounds: the first probes everyone at once, later ones spread over the
interval; a neuron real traffic has just proved alive is left out, but not for long."""

from __future__ import annotations

import asyncio

import pytest

from ganglion.fleet.neuron import Neuron
from ganglion.fleet.probes import FULL_PROBE_ROUNDS, MIN_STEP_S, Prober
from ganglion.neurons.base import Dialect

INTERVAL = 8.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # let the probes started so far begin, as a real sleep does
        self.now += seconds


class Fleet:
    """What the prober asks of the registry, recording when each probe started."""

    def __init__(self, clock: Clock, names: list[str]) -> None:
        self.clock = clock
        self.all = [neuron(name) for name in names]
        self.probed: list[tuple[str, float]] = []

    def neurons(self) -> list[Neuron]:
        return list(self.all)

    async def sync(self) -> None:
        return None

    async def probe(self, neuron: Neuron) -> None:
        self.probed.append((neuron.name, self.clock.now))
        neuron.health.probed_at = self.clock.now


def neuron(name: str) -> Neuron:
    return Neuron(
        id=0,
        name=name,
        url=f"http://{name}:1",
        api=Dialect.OLLAMA,
        node=name,
        models=["m"],
        adapter=None,  # type: ignore[arg-type]  # the fleet stand-in never talks to neurons
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


def prober(clock: Clock, fleet: Fleet) -> Prober:
    return Prober(fleet, INTERVAL, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


async def test_the_first_round_probes_everyone_at_once(clock: Clock) -> None:
    fleet = Fleet(clock, ["a", "b", "c", "d"])
    await prober(clock, fleet).round(spread=False)
    assert fleet.probed == [(name, 1000.0) for name in "abcd"]


async def test_later_rounds_spread_the_probes_over_the_interval(clock: Clock) -> None:
    fleet = Fleet(clock, ["a", "b", "c", "d"])
    await prober(clock, fleet).round(spread=True)
    assert fleet.probed == [("a", 1000.0), ("b", 1002.0), ("c", 1004.0), ("d", 1006.0)]


async def test_traffic_just_answered_stands_in_for_a_probe_but_not_for_long(clock: Clock) -> None:
    fleet = Fleet(clock, ["busy", "idle", "stale", "paused"])
    busy, idle, stale, paused = fleet.all
    for each in fleet.all:
        each.health.probed_at = clock.now - INTERVAL
    busy.health.request_completed(clock.now - 1)
    stale.health.request_completed(clock.now - 1)
    stale.health.probed_at = clock.now - FULL_PROBE_ROUNDS * INTERVAL  # too long ago
    paused.health.request_completed(clock.now - 1)
    paused.health.suspended = True
    idle.health.request_completed(clock.now - 2 * INTERVAL)  # answered, but not lately
    watcher = prober(clock, fleet)
    await watcher.round(spread=False)
    assert [name for name, _ in fleet.probed] == ["idle", "stale", "paused"]
    assert watcher.skipped == 1


async def test_a_large_fleets_probes_start_in_groups_spread_over_the_interval(
    clock: Clock,
) -> None:
    names = [f"n{i}" for i in range(400)]  # one every 20 ms: in groups of 5, 0.1 s apart
    fleet = Fleet(clock, names)
    await prober(clock, fleet).round(spread=True)
    starts = sorted({when - 1000.0 for _, when in fleet.probed})
    assert len(fleet.probed) == 400
    assert len(starts) == 80
    assert starts[1] - starts[0] == pytest.approx(MIN_STEP_S)
    assert starts[-1] == pytest.approx(INTERVAL - MIN_STEP_S)
