"""What requests teach the registry, written to the store behind them.

A finished request updates its neuron in memory at once: its speed estimate, its status
and last-seen time. What the store keeps of that waits in memory: each speed sample
(:class:`~ganglion.store.SpeedSample`) in a bounded buffer, and each neuron's newest
status, reason and last-seen time (an update replaces the one before). One task writes them
in a single transaction every :data:`FLUSH_S`, and once more when the registry closes: a
clean shutdown loses nothing, a crash at most the last :data:`FLUSH_S`. The store feeds
them back only at the next start (this gateway's own evidence stays its own), so a request
never waits for a commit, and a neuron whose status flaps costs one write per interval,
not one per request.

Some updates can wait longer (``lazy``): a neuron's last-seen time, refreshed by every probe,
is written at most every :data:`LAZY_FLUSH_S`, a thousand neurons' in one transaction rather
than a few in each of a hundred. A later update of the same field, lazy or not, replaces it.

When the store falls so far behind that :data:`MAX_PENDING` samples wait, the oldest are
dropped (and counted): they are statistics, and the newest say more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from datetime import datetime

from ganglion.store import SpeedSample, Store

FLUSH_S = 0.1
LAZY_FLUSH_S = 30.0
MAX_PENDING = 10_000

log = logging.getLogger(__name__)


class WriteBehind:
    """The write-behind buffer of one registry: speed samples, and neuron updates."""

    def __init__(
        self,
        store: Store,
        *,
        flush_s: float = FLUSH_S,
        lazy_flush_s: float = LAZY_FLUSH_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.store = store
        self.flush_s = flush_s
        self.lazy_flush_s = lazy_flush_s
        self.dropped = 0
        self._pending: deque[SpeedSample] = deque(maxlen=max_pending)
        self._updates: dict[int, dict[str, object]] = {}
        self._lazy: dict[int, dict[str, object]] = {}  # bounded: one entry per neuron
        self._task: asyncio.Task[None] | None = None
        self._lazy_task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, sample: SpeedSample) -> None:
        """Keep ``sample`` for the next write; never waits."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # the deque drops its oldest to take this one
        self._pending.append(sample)
        self._wake()

    def update_neuron(
        self, neuron_id: int, values: dict[str, object], *, lazy: bool = False
    ) -> None:
        """Keep ``values`` for the neuron's row, for the next write (``lazy``: within
        :attr:`lazy_flush_s`); later values of a field replace earlier ones. A neuron removed
        before the write is skipped."""
        waiting = self._lazy.get(neuron_id)
        if lazy:
            self._lazy.setdefault(neuron_id, {}).update(values)
            if self._lazy_task is None or self._lazy_task.done():
                self._lazy_task = asyncio.get_running_loop().create_task(self._write_lazy())
            return
        if waiting is not None:  # these values are newer than the lazy ones
            for field in values:
                waiting.pop(field, None)
        self._updates.setdefault(neuron_id, {}).update(values)
        self._wake()

    def seen(self, neuron_id: int, when: datetime) -> None:
        """The neuron was last seen ``when``: a lazy update of its ``last_seen``, as every
        request and probe makes, so it builds nothing when one is waiting already."""
        waiting = self._lazy.get(neuron_id)
        if waiting is None:
            self.update_neuron(neuron_id, {"last_seen": when}, lazy=True)
        else:  # the lazy write is on its way (its task ends by taking the whole dict)
            waiting["last_seen"] = when

    def forget(self, neuron_id: int) -> None:
        """Drop what is pending for a neuron being removed: SQLite may give its id to the next
        neuron registered, which must not receive the old one's status or samples."""
        self._updates.pop(neuron_id, None)
        self._lazy.pop(neuron_id, None)
        kept = [sample for sample in self._pending if sample.neuron_id != neuron_id]
        self._pending.clear()
        self._pending.extend(kept)

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._keep_writing())

    async def _write_lazy(self) -> None:
        await asyncio.sleep(self.lazy_flush_s)
        self._take_lazy()
        self._wake()

    def _take_lazy(self) -> None:
        """Move the lazy updates among the others (which are newer, where both have a field)."""
        for neuron_id, values in self._lazy.items():
            if values:
                self._updates[neuron_id] = values | self._updates.get(neuron_id, {})
        self._lazy = {}

    async def flush(self) -> int:
        """Write everything pending now; how many samples were written. A failed write is
        logged and dropped (what is in memory already has it)."""
        batch, updates = list(self._pending), self._updates
        self._pending.clear()
        self._updates = {}
        if not batch and not updates:
            return 0
        try:
            return await asyncio.to_thread(self.store.write_behind, batch, updates)
        except Exception as error:  # a store gone away must not take the gateway with it
            log.warning("could not write %d speed samples: %s", len(batch), error)
            return 0

    async def aclose(self) -> None:
        """Stop the writing tasks, then write what is left, lazy or not."""
        for task in (self._task, self._lazy_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._lazy_task = None
        self._take_lazy()
        await self.flush()

    async def _keep_writing(self) -> None:
        while self._pending or self._updates:
            await asyncio.sleep(self.flush_s)
            await self.flush()
