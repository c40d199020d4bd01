"""The prober: a background task that checks every neuron's liveness at a fixed interval.

Each round first takes in the fleet changes other gateways sharing the store made
(:meth:`Registry.sync`), so replicas agree on the fleet within one interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ganglion.fleet.registry import Registry

log = logging.getLogger(__name__)


class Prober:
    """Probe every neuron every ``interval_s`` seconds until stopped."""

    def __init__(self, registry: Registry, interval_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="ganglion-prober")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.registry.sync()
                await self.registry.probe_all()
            except Exception:  # a bug in one round must not stop liveness for good
                log.exception("probe round failed")
            await asyncio.sleep(self.interval_s)


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (when there is one) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
