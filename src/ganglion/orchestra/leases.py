"""This replica's leases on the runs it carries (the rows are in :mod:`ganglion.store.runs`).

A run is carried by one replica at a time, the one holding its lease. A replica claims a run
before carrying it, renews the leases it holds every third of ``lease_s``, and adopts the
running runs nobody carries: its own from before a restart (at once) and those whose lease
ran out (a replica that crashed or stalled). A run another replica took while this one
stalled is no longer ours: ``lost`` is told, and its work stops. A run cancelled by an
operator stops at its next write (:class:`~ganglion.orchestra.run.LostRun`); one that just
ended here is left to finish (its ``done`` event is still to go out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Container

from ganglion.store import Store
from ganglion.store import runs as records

log = logging.getLogger(__name__)


class Leases:
    def __init__(
        self,
        store: Store,
        replica: str,
        lease_s: float,
        *,
        launch: Callable[[str], None],
        lost: Callable[[str], None],
    ) -> None:
        self.store = store
        self.replica = replica
        self.lease_s = lease_s
        self._launch = launch
        self._lost = lost
        self._held: set[str] = set()  # claimed here, renewed until dropped
        self._keeper: asyncio.Task[None] | None = None

    def until(self) -> float:
        """When a lease taken or renewed now runs out (seconds since the epoch)."""
        return time.time() + self.lease_s

    async def claim(self, run_id: str) -> bool:
        """Take ``run_id``'s lease; False when another replica holds it."""
        now = time.time()
        claimed = await asyncio.to_thread(
            records.claim_run, self.store, run_id, self.replica, now, now + self.lease_s
        )
        if claimed:
            self._held.add(run_id)
        return claimed

    def drop(self, run_id: str) -> None:
        """Stop renewing ``run_id``'s lease (it ended, or is no longer ours)."""
        self._held.discard(run_id)

    async def adopt(self, carried: Container[str]) -> list[str]:
        """Launch the running runs nobody carries (but not those in ``carried``)."""
        found = await asyncio.to_thread(
            records.adoptable_runs, self.store, self.replica, time.time()
        )
        fresh = [run_id for run_id in found if run_id not in carried]
        for run_id in fresh:
            self._launch(run_id)
        return fresh

    def keep(self, carried: Container[str]) -> None:
        """Renew and adopt every third of ``lease_s`` until :meth:`stop`."""
        self._keeper = asyncio.create_task(self._keep(carried), name="run-leases")

    async def _keep(self, carried: Container[str]) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                taken = await asyncio.to_thread(
                    records.renew_leases, self.store, self.replica, list(self._held), self.until()
                )
                for run_id in taken:
                    log.warning("run %s: no longer ours (adopted or cancelled); stopping", run_id)
                    self._lost(run_id)
                await self.adopt(carried)
            except Exception:  # the store may be away for a moment: try again next round
                log.warning("renewing run leases failed", exc_info=True)

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper

    async def release(self) -> None:
        """Give up every lease held here, so other replicas may take the runs on at once."""
        try:
            await asyncio.to_thread(records.release_runs, self.store, self.replica)
        except Exception:  # the store may be what is going away
            log.warning("could not release this replica's runs; their leases will run out")
