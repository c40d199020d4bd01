"""Speed samples, written behind the requests that made them.

A finished request updates its neuron's speed estimate in memory at once, and leaves its
sample (:class:`~ganglion.store.SpeedSample`) in a bounded buffer. One task writes the
buffer to the store in a single transaction every :data:`FLUSH_S`, and once more when the
registry closes: a clean shutdown loses no sample, a crash loses at most the last
:data:`FLUSH_S` of them. The store only feeds the estimates back at the next start, so a
request never waits for a commit.

When the store falls so far behind that :data:`MAX_PENDING` samples wait, the oldest are
dropped (and counted): they are statistics, and the newest say more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from ganglion.store import SpeedSample, Store

FLUSH_S = 0.1
MAX_PENDING = 10_000

log = logging.getLogger(__name__)


class SampleWriter:
    """The write-behind buffer of one registry's speed samples."""

    def __init__(
        self, store: Store, *, flush_s: float = FLUSH_S, max_pending: int = MAX_PENDING
    ) -> None:
        self.store = store
        self.flush_s = flush_s
        self.dropped = 0
        self._pending: deque[SpeedSample] = deque(maxlen=max_pending)
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, sample: SpeedSample) -> None:
        """Keep ``sample`` for the next write; never waits."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # the deque drops its oldest to take this one
        self._pending.append(sample)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._keep_writing())

    async def flush(self) -> int:
        """Write every pending sample now; how many were written. A failed write is logged
        and its samples dropped (the estimates in memory already have them)."""
        batch = list(self._pending)
        self._pending.clear()
        if not batch:
            return 0
        try:
            return await asyncio.to_thread(self.store.add_samples, batch)
        except Exception as error:  # a store gone away must not take the gateway with it
            log.warning("could not write %d speed samples: %s", len(batch), error)
            return 0

    async def aclose(self) -> None:
        """Stop the writing task, then write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _keep_writing(self) -> None:
        while self._pending:
            await asyncio.sleep(self.flush_s)
            await self.flush()
