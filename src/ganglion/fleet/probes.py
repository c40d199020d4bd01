"""The prober: a background task that checks every neuron's liveness once per interval.

Each round first takes in the fleet changes other gateways sharing the store made
(:meth:`Registry.sync`), so replicas agree on the fleet within one interval. The first round
probes every neuron at once, so a starting gateway learns the truth quickly; later rounds
spread their probes evenly over the interval, so a thousand neurons cost a steady trickle
of requests rather than a burst every few seconds.

A neuron that answered real traffic within the last interval is alive, and is not probed
again then: its answer was the better proof. It is still probed at least every
:data:`FULL_PROBE_ROUNDS` rounds, which keep its model list and memory use current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry

FULL_PROBE_ROUNDS = 6
#: Spread probes start in groups at most this often: a thousand neurons every 10 s are ten
#: every 0.1 s, not one every 10 ms (each wake of the event loop costs CPU of its own).
MIN_STEP_S = 0.1

log = logging.getLogger(__name__)


class Prober:
    """Probe every neuron every ``interval_s`` seconds until stopped."""

    def __init__(
        self,
        registry: Registry,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self.skipped = 0  # probes left out because real traffic had just proved the neuron
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="ganglion-prober")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        spread = False  # the first round probes everyone at once
        while True:
            started = self.clock()
            try:
                await self.registry.sync()
                await self.round(spread=spread)
            except Exception:  # a bug in one round must not stop liveness for good
                log.exception("probe round failed")
            spread = True
            await self.sleep(max(started + self.interval_s - self.clock(), 0.0))

    async def round(self, *, spread: bool) -> None:
        """Probe each neuron that needs it, the ``i``-th of ``n`` at ``i/n`` of the interval
        when ``spread`` (in groups :data:`MIN_STEP_S` apart, when that is more often); wait
        for every probe started."""
        neurons = self.registry.neurons()
        started = self.clock()
        step = self.interval_s / len(neurons) if spread and neurons else 0.0
        group = math.ceil(MIN_STEP_S / step) if step else 1
        probes: list[asyncio.Task[None]] = []
        for index, neuron in enumerate(neurons):
            if step and index % group == 0:
                await self.sleep(max(started + index * step - self.clock(), 0.0))
            if self._proved_by_traffic(neuron):
                self.skipped += 1
                continue
            probes.append(asyncio.create_task(self.registry.probe(neuron)))
        await asyncio.gather(*probes)

    def _proved_by_traffic(self, neuron: Neuron) -> bool:
        health, now = neuron.health, self.clock()
        answered = health.answered_at is not None and now - health.answered_at < self.interval_s
        recent = (
            health.probed_at is not None
            and now - health.probed_at < FULL_PROBE_ROUNDS * self.interval_s
        )
        return answered and recent and not health.suspended


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (when there is one) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
