"""Carrying a run through, whichever way it goes: its request, its lease, its record.

    start ─▶ claim the lease ─▶ stitched pipeline (:mod:`~ganglion.orchestra.pipeline`)
                              ├▶ plan, parts, rewrite (:mod:`~ganglion.orchestra.rewrite`)
                              └▶ direct: the fastest neuron answers, when splitting would lose

:class:`Orchestra` holds what every way shares: asking the fleet (with failover, pinned to a
neuron or not), delegating a part (moved on failure), and writing each step to the store as
it happens, so a completed delegation is never computed again and a run the gateway was
stopped in the middle of resumes from the store.

Gateway replicas may share one database. A run is carried by one replica at a time, the one
holding its lease (see :mod:`ganglion.store.runs`); the replica renews its leases every third
of ``lease_s`` and adopts runs whose lease ran out, so a crashed replica's runs go on
elsewhere. A replica restarted under the same name takes its own runs back at once. A write
that finds the run no longer ours (adopted after a stall, or cancelled) stops the work quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Any

from ganglion.clock import aware, utcnow
from ganglion.dispatch import Dispatcher, Stream
from ganglion.errors import (
    BrokenMidStream,
    ConfigError,
    DispatchError,
    GanglionError,
    NeuronError,
    NoNeuronForModel,
    UnknownRun,
)
from ganglion.fleet.registry import Registry
from ganglion.neurons.base import ChatCall, TokenStats
from ganglion.orchestra import plan as planning
from ganglion.orchestra.direct import answer_directly
from ganglion.orchestra.events import RunEvents
from ganglion.orchestra.leases import Leases
from ganglion.orchestra.pipeline import StitchedRun
from ganglion.orchestra.plan import NotWorthIt
from ganglion.orchestra.request import DIRECT_TOKENS, RunRequest
from ganglion.orchestra.rewrite import RewriteRun
from ganglion.orchestra.view import run_view
from ganglion.routing import Job, Router
from ganglion.store import Store
from ganglion.store import runs as records
from ganglion.store.schema import RunRow

log = logging.getLogger(__name__)


class LostRun(Exception):
    """The run is no longer ours to carry: another replica adopted it, or it was cancelled."""


INTERRUPTED = "interrupted: the gateway carrying the run stopped; run again"


class Orchestra:
    """Runs tasks across the fleet. One per gateway."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        router: Router,
        dispatcher: Dispatcher,
        *,
        max_attempts: int = 3,
        replica: str = "local",
        lease_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.registry = registry
        self.router = router
        self.dispatcher = dispatcher
        self.max_attempts = max_attempts
        self.replica = replica
        self.lease_s = lease_s
        self.clock = clock
        self.events = RunEvents()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # when each run carried here sent its first answer text (popped as the run ends)
        self._first_answer: dict[str, float] = {}
        self.leases = Leases(store, replica, lease_s, launch=self._launch, lost=self._lost)

    # lifecycle

    async def start(self, request: RunRequest) -> str:
        request.check()
        model = request.model or self.default_model()
        run_id = uuid.uuid4().hex
        row = RunRow(
            id=run_id,
            task=request.task,
            status="running",
            brain=request.brain or model,
            model=model,
            policy=request.policy,
            plan=None,
            timings={
                "max_subtasks": request.max_subtasks,
                "decompose_mode": request.decompose,
                "synthesis": request.synthesis,
                "answer_tokens": request.answer_tokens,
            },
            owner=self.replica,
            lease_until=self.leases.until(),
        )
        await asyncio.to_thread(records.add_run, self.store, row)
        self._launch(run_id)
        return run_id

    async def adopt(self) -> list[str]:
        """Carry the running runs nobody carries: this replica's own from before a restart,
        and those of replicas that stopped renewing their leases."""
        return await self.leases.adopt(self._tasks)

    async def keep(self) -> None:
        """Adopt what a stopped gateway left, then keep renewing leases and adopting."""
        await self.adopt()
        self.leases.keep(self._tasks)

    async def stop(self) -> None:
        await self.leases.stop()
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.leases.release()  # other replicas may take them on at once

    def _lost(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Stop a running run: its unfinished delegations become ``cancelled``, the run
        ``failed`` with the reason. Completed delegations keep their output."""
        view = await self.view(run_id)
        if view is None:
            raise UnknownRun(f"no run {run_id!r}: see ganglion runs list")
        run_id = view["id"]
        if view["status"] != "running":
            raise ConfigError(f"run {run_id} is already {view['status']}: nothing to cancel")
        task = self._tasks.pop(run_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # the run first: whichever replica carries it finds it no longer running and stops
        await asyncio.to_thread(
            records.update_run,
            self.store,
            run_id,
            status="failed",
            reason="cancelled by the operator",
            finished_at=utcnow(),
        )
        for d in view["delegations"] or []:
            if d["status"] in ("pending", "active"):
                await asyncio.to_thread(
                    records.update_delegation,
                    self.store,
                    run_id,
                    d["index"],
                    status="cancelled",
                    finished_at=utcnow(),
                )
        await self._publish(run_id, done=True)
        cancelled = await self.view(run_id)
        assert cancelled is not None
        return cancelled

    async def wait(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    def _launch(self, run_id: str) -> None:
        task = asyncio.create_task(self._carry(run_id), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))

    def default_model(self) -> str:
        """The model most active neurons serve (the fastest such neuron breaks ties)."""
        counts: dict[str, tuple[int, float]] = {}
        for neuron in self.registry.neurons():
            if not neuron.is_active:
                continue
            for model in neuron.models:
                count, best = counts.get(model, (0, 0.0))
                counts[model] = (count + 1, max(best, neuron.speeds.speed(model) or 0.0))
        if not counts:
            raise NoNeuronForModel("no active neuron serves any model: add one first")
        return max(counts, key=lambda m: counts[m])

    # reading

    async def view(self, run_id: str) -> dict[str, Any] | None:
        """The run with id ``run_id`` (or the one run whose id starts with it)."""
        row = await asyncio.to_thread(records.get_run, self.store, run_id)
        if row is None and len(run_id) >= 4:
            found = await asyncio.to_thread(records.run_ids_starting, self.store, run_id)
            if len(found) == 1:
                run_id = found[0]
                row = await asyncio.to_thread(records.get_run, self.store, run_id)
        if row is None:
            return None
        rows = await asyncio.to_thread(records.delegations, self.store, run_id)
        return run_view(row, list(rows))

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(records.list_runs, self.store, limit)
        return [run_view(row, []) | {"delegations": None} for row in rows]

    # the run

    async def _carry(self, run_id: str) -> None:
        if not await self.leases.claim(run_id):
            return  # another replica carries it
        try:
            await self._resume(run_id)
        except LostRun:
            log.warning("run %s: no longer ours (adopted or cancelled); stopping", run_id)
        finally:
            self.leases.drop(run_id)

    async def _resume(self, run_id: str) -> None:
        interrupted = await asyncio.to_thread(
            records.release_interrupted, self.store, run_id, self.replica, INTERRUPTED
        )
        if interrupted:
            log.warning(
                "run %s: subtasks %s were interrupted; running them again", run_id, interrupted
            )
        row = await asyncio.to_thread(records.get_run, self.store, run_id)
        assert row is not None
        timings = dict(row.timings or {})
        try:
            await self._publish(run_id)
            answer, extra = await self._work(row, timings)
        except (asyncio.CancelledError, LostRun):
            self._first_answer.pop(run_id, None)
            raise
        except Exception as error:  # the run fails; the gateway does not
            self._first_answer.pop(run_id, None)
            log.exception("run %s failed", run_id)
            reason = str(error) if isinstance(error, GanglionError) else repr(error)
            await self._save(run_id, status="failed", reason=reason, finished_at=utcnow())
            await self._publish(run_id, done=True)
            return
        # wall time from the request, so a run resumed after a restart counts its downtime
        created = aware(row.created_at)
        timings["total_s"] = round((utcnow() - created).total_seconds(), 3)
        if (first := self._first_answer.pop(run_id, None)) is not None:
            timings.setdefault("first_token_s", round(first - created.timestamp(), 3))
        await self._save(
            run_id,
            timings=timings,
            status="completed",
            answer=answer,
            finished_at=utcnow(),
            **extra,
        )
        await self._publish(run_id, done=True)

    async def _work(self, row: RunRow, timings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = RunRequest(
            task=row.task,
            model=row.model,
            brain=row.brain,
            policy=row.policy or "speed",
            max_subtasks=int(timings.get("max_subtasks", 4)),
            decompose=str(timings.get("decompose_mode", "auto")),
            synthesis=str(timings.get("synthesis", "rewrite")),  # runs from before stitching
            answer_tokens=int(timings.get("answer_tokens", DIRECT_TOKENS)),
        )
        model = row.model or self.default_model()
        runner = StitchedRun if request.synthesis == "stitch" else RewriteRun
        try:
            if request.decompose == "never":
                raise NotWorthIt("decomposition was turned off (--decompose never)")
            return await runner(self, row, request, model, timings).run()
        except NotWorthIt as why:
            budget = why.budget or request.answer_tokens
            return await answer_directly(self, row.id, request, model, str(why), timings, budget)

    def _speeds(self, model: str) -> dict[str, float]:
        serving = self.router.serving(model)
        typical = self.router.typical_tps(model, serving)
        return {n.name: self.router.decode_tps(n, model, typical) for n in serving}

    def _slots(self, model: str) -> dict[str, int]:
        return {n.name: n.slots for n in self.router.serving(model)}

    async def _ask(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        schema: dict[str, Any] | None = None,
        *,
        pinned: str | None = None,
        answer_of: str | None = None,
    ) -> tuple[str, tuple[str, TokenStats]]:
        """One answer from the fleet. An unpinned request whose neuron fails mid-answer
        starts again on another (the one that failed is cooling down), up to
        ``max_attempts`` times; a pinned one raises, for :meth:`_delegate` to move it.
        ``answer_of`` names the run whose answer this is: its text streams out as
        ``answer`` events, and an ``answer_restart`` event says when it starts again."""
        for attempt in range(1, self.max_attempts + 1):
            stream = await self._open(model, messages, max_tokens, schema, pinned)
            try:
                return await self._read(stream, answer_of)
            except BrokenMidStream as error:
                if pinned is not None or attempt == self.max_attempts:
                    raise
                if answer_of is not None:
                    restart = {"type": "answer_restart", "reason": str(error)}
                    self.events.publish(answer_of, restart)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def stream_text(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        schema: dict[str, Any] | None = None,
        *,
        pinned: str | None = None,
        answered_by: Callable[[str], None] | None = None,
        stop: list[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        """One answer from the fleet, its text as it streams. Failover happens before the
        first byte; a neuron that breaks after it raises :class:`BrokenMidStream`.
        ``answered_by`` is told the neuron's name once it has answered; ``stop`` ends the
        answer at any of its strings."""
        stream = await self._open(model, messages, max_tokens, schema, pinned, stop)
        if answered_by is not None:
            answered_by(stream.neuron.name)
        try:
            if stream.first.text:
                yield stream.first.text
            async for chunk in stream:
                if chunk.text:
                    yield chunk.text
        finally:
            await stream.aclose()

    async def _open(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        schema: dict[str, Any] | None,
        pinned: str | None,
        stop: list[str] | None = None,
    ) -> Stream:
        """A chat answer streaming from the neuron the router picks (or ``pinned``)."""
        options: dict[str, Any] = {"temperature": 0.2} if schema else {}
        if stop:
            options["stop"] = stop
        request = ChatCall(
            model=model, messages=messages, max_tokens=max_tokens, format=schema, options=options
        )
        job = Job(model, sum(len(m["content"]) for m in messages) // 4, max_tokens)
        return await self.dispatcher.open(job, request, endpoint="orchestra", pinned=pinned)

    async def _read(
        self, stream: Stream, answer_of: str | None
    ) -> tuple[str, tuple[str, TokenStats]]:
        """The whole text of ``stream`` and who answered at what cost, streaming it out as
        ``answer`` events of the run ``answer_of`` when given."""
        parts = [stream.first.text]
        self._tell(answer_of, stream.first.text)
        last = stream.first
        try:
            async for chunk in stream:
                parts.append(chunk.text)
                self._tell(answer_of, chunk.text)
                last = chunk
        finally:
            await stream.aclose()
        return "".join(parts), (stream.neuron.name, last.stats or TokenStats())

    def _tell(self, run_id: str | None, text: str) -> None:
        if run_id is not None and text:
            self._first_answer.setdefault(run_id, time.time())
            self.events.publish(run_id, {"type": "answer", "text": text})

    async def _delegate(
        self,
        run_id: str,
        model: str,
        index: int,
        subtask: planning.Subtask,
        neuron: str | None,
        messages: list[dict[str, str]] | None = None,
    ) -> str | None:
        """Have ``neuron`` answer the subtask, moving it on failure; its output, or None
        when every attempt failed."""
        tried: list[str] = []
        target = neuron or self._next_neuron(model, subtask, tried)
        attempts = 0
        while target is not None and attempts < self.max_attempts:
            attempts += 1
            tried.append(target)
            await self._save_delegation(
                run_id,
                index,
                neuron=target,
                status="active",
                attempts=attempts,
                started_at=utcnow(),
            )
            start = self.clock()
            try:
                output, (_, stats) = await self._ask(
                    model,
                    messages or [{"role": "user", "content": subtask.task}],
                    subtask.expected_tokens,
                    pinned=target,
                )
            except (DispatchError, NeuronError) as error:
                await self._save_delegation(run_id, index, error=str(error), status="pending")
                target = self._next_neuron(model, subtask, tried)
                continue
            seconds = self.clock() - start
            await self._save_delegation(
                run_id,
                index,
                status="completed",
                output=output,
                tokens=stats.output_tokens,
                seconds=round(seconds, 3),
                finished_at=utcnow(),
                error=None,
            )
            return output
        await self._save_delegation(run_id, index, status="failed", finished_at=utcnow())
        return None

    def _next_neuron(self, model: str, subtask: planning.Subtask, tried: list[str]) -> str | None:
        """Where a failed subtask now finishes earliest, among neurons not yet tried."""
        for estimate in self.router.rank(Job(model, 0, subtask.expected_tokens)):
            if estimate.neuron.name not in tried:
                return estimate.neuron.name
        return None

    # recording

    async def _save(self, run_id: str, **values: Any) -> None:
        """Write while this replica carries the run; :class:`LostRun` once it does not."""
        if not await asyncio.to_thread(
            records.update_run, self.store, run_id, self.replica, **values
        ):
            raise LostRun(run_id)

    async def _save_delegation(self, run_id: str, index: int, **values: Any) -> None:
        if not await asyncio.to_thread(
            records.update_delegation, self.store, run_id, index, self.replica, **values
        ):
            raise LostRun(run_id)
        self.events.publish(run_id, {"type": "delegation", "index": index, **_plain(values)})

    async def _publish(self, run_id: str, *, done: bool = False) -> None:
        view = await self.view(run_id)
        self.events.publish(run_id, {"type": "run", "run": view})
        if done:
            self.events.publish(run_id, {"type": "done", "run": view})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
