"""Carrying a run through: decide, decompose, schedule, delegate, synthesize, record.

    decide ─▶ decompose (brain, JSON schema) ─▶ decide again with the plan
        │                                          │
        └── direct: the fastest neuron answers ◀───┘ when splitting cannot win
                                                   │
                     schedule (Q||Cmax) ─▶ delegations in parallel ─▶ synthesize (brain)

Every step is written to the store as it happens: a completed delegation is never computed
again, and a run the gateway was stopped in the middle of resumes from the store.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
from ganglion.neurons.base import ChatRequest, TokenStats
from ganglion.orchestra import plan as planning
from ganglion.orchestra.events import RunEvents
from ganglion.orchestra.pipeline import NotWorthIt, StitchedRun
from ganglion.orchestra.schedule import POLICIES, Schedule, lower_bound, schedule, workers
from ganglion.orchestra.view import aware, run_view, utcnow
from ganglion.routing import Job, Router
from ganglion.store import Store
from ganglion.store import runs as records
from ganglion.store.schema import DelegationRow, RunRow

log = logging.getLogger(__name__)

PLAN_TOKENS = 600
PLAN_ESTIMATE_TOKENS = 150  # what a plan usually costs the brain to write
DIRECT_TOKENS = 512  # the budget of a direct answer when no plan says better
SYNTHESIS_SHARE = 4  # the synthesis is budgeted a quarter of the parts it combines
SYNTHESIS_TOKENS = (64, 512)
DECOMPOSE_MODES = ("auto", "always", "never")
SYNTHESES = ("stitch", "rewrite")


@dataclass(frozen=True)
class RunRequest:
    task: str
    model: str | None = None
    brain: str | None = None
    policy: str = "speed"
    max_subtasks: int = 4
    decompose: str = "auto"
    synthesis: str = "stitch"
    answer_tokens: int = DIRECT_TOKENS

    def check(self) -> None:
        if not self.task.strip():
            raise ConfigError("the task is empty: give the task to run as text")
        if self.policy not in POLICIES:
            raise ConfigError(
                f"unknown policy {self.policy!r}: choose one of {', '.join(POLICIES)}"
            )
        if self.decompose not in DECOMPOSE_MODES:
            raise ConfigError(
                f"unknown decompose mode {self.decompose!r}: choose one of "
                f"{', '.join(DECOMPOSE_MODES)}"
            )
        if not 2 <= self.max_subtasks <= 32:
            raise ConfigError(f"max_subtasks is {self.max_subtasks}: give 2 to 32")
        if self.synthesis not in SYNTHESES:
            raise ConfigError(
                f"unknown synthesis {self.synthesis!r}: choose one of {', '.join(SYNTHESES)}"
            )
        if not 64 <= self.answer_tokens <= 8192:
            raise ConfigError(f"answer_tokens is {self.answer_tokens}: give 64 to 8192")


class Direct(Exception):
    """Answer directly, for the reason given."""


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
        self._held: set[str] = set()  # runs claimed by this replica, their leases renewed
        # when each run carried here sent its first answer text (popped as the run ends)
        self._first_answer: dict[str, float] = {}
        self._keeper: asyncio.Task[None] | None = None

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
            lease_until=time.time() + self.lease_s,
        )
        await asyncio.to_thread(records.add_run, self.store, row)
        self._launch(run_id)
        return run_id

    async def adopt(self) -> list[str]:
        """Carry the running runs nobody carries: this replica's own from before a restart,
        and those of replicas that stopped renewing their leases."""
        found = await asyncio.to_thread(
            records.adoptable_runs, self.store, self.replica, time.time()
        )
        fresh = [run_id for run_id in found if run_id not in self._tasks]
        for run_id in fresh:
            self._launch(run_id)
        return fresh

    async def keep(self) -> None:
        """Adopt what a stopped gateway left, then keep renewing leases and adopting."""
        await self.adopt()
        self._keeper = asyncio.create_task(self._keep(), name="run-leases")

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                held = list(self._held)
                kept = await asyncio.to_thread(
                    records.renew_leases, self.store, self.replica, held, time.time() + self.lease_s
                )
                for run_id in set(held) - kept:
                    log.warning("run %s: no longer ours (adopted or cancelled); stopping", run_id)
                    task = self._tasks.get(run_id)
                    if task is not None:
                        task.cancel()
                await self.adopt()
            except Exception:  # the store may be away for a moment: try again next round
                log.warning("renewing run leases failed", exc_info=True)

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:  # other replicas may take them on at once
            await asyncio.to_thread(records.release_runs, self.store, self.replica)
        except Exception:  # the store may be what is going away
            log.warning("could not release this replica's runs; their leases will run out")

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
        now = time.time()
        claimed = await asyncio.to_thread(
            records.claim_run, self.store, run_id, self.replica, now, now + self.lease_s
        )
        if not claimed:
            return  # another replica carries it
        self._held.add(run_id)
        try:
            await self._resume(run_id)
        except LostRun:
            log.warning("run %s: no longer ours (adopted or cancelled); stopping", run_id)
        finally:
            self._held.discard(run_id)

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
        if request.synthesis == "stitch":
            return await self._stitched(row, request, model, timings)
        subtasks: list[planning.Subtask] = []
        try:
            if row.plan is None:
                self._worth_splitting(request, model)
                start = self.clock()
                try:
                    subtasks = await self._decompose(row.id, request)
                finally:
                    timings["decompose_s"] = round(self.clock() - start, 3)
                await self._save(
                    row.id, plan={"subtasks": [s.as_dict() for s in subtasks]}, timings=timings
                )
            else:
                subtasks = [planning.Subtask(**s) for s in row.plan["subtasks"]]
            plan = self._schedule(request, model, subtasks)
            self._still_worth_it(request, plan, subtasks, model)
        except Direct as why:
            budget = sum(s.expected_tokens for s in subtasks)
            return await self._direct(row.id, request, model, str(why), timings, budget)
        return await self._decomposed(row.id, request, model, subtasks, plan, timings)

    async def _stitched(
        self, row: RunRow, request: RunRequest, model: str, timings: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The pipeline: outline streamed, parts sized to speed, the answer stitched."""
        try:
            if request.decompose == "never":
                raise NotWorthIt("decomposition was turned off (--decompose never)")
            return await StitchedRun(self, row, request, model, timings).run()
        except NotWorthIt as why:
            return await self._direct(
                row.id, request, model, str(why), timings, request.answer_tokens
            )

    def _worth_splitting(self, request: RunRequest, model: str) -> None:
        """Before asking the brain: could splitting win even if the work split perfectly?

        The task is taken to need :data:`DIRECT_TOKENS` of answer; planning costs
        :data:`PLAN_ESTIMATE_TOKENS` and synthesis a quarter of the answer, both on the
        fastest neuron; the parallel phase is its lower bound in ``max_subtasks`` equal parts.
        """
        if request.decompose == "never":
            raise Direct("decomposition was turned off (--decompose never)")
        if request.decompose == "always":
            return
        pool = workers(self._speeds(model), self._slots(model))
        if len(pool) < 2:
            raise Direct(f"only one neuron slot serves {model}: nothing can run in parallel")
        fastest = pool[0].tokens_per_second
        parts = [DIRECT_TOKENS / request.max_subtasks] * request.max_subtasks
        overhead = (PLAN_ESTIMATE_TOKENS + DIRECT_TOKENS / SYNTHESIS_SHARE) / fastest
        split = overhead + lower_bound(parts, [w.tokens_per_second for w in pool])
        solo = DIRECT_TOKENS / fastest
        if split >= solo:
            raise Direct(
                f"splitting would take about {split:.1f} s (planning, parallel work, synthesis) "
                f"against {solo:.1f} s for {pool[0].neuron} alone"
            )

    def _still_worth_it(
        self, request: RunRequest, plan: Schedule, subtasks: list[planning.Subtask], model: str
    ) -> None:
        if request.decompose != "auto":
            return
        fastest = max(self._speeds(model).values())
        solo = sum(s.expected_tokens for s in subtasks) / fastest
        synthesis = synthesis_budget(subtasks) / fastest
        if plan.predicted_s + synthesis >= solo:
            raise Direct(
                f"the plan would take {plan.predicted_s + synthesis:.1f} s in parallel with "
                f"synthesis, against {solo:.1f} s for the fastest neuron alone"
            )

    def _speeds(self, model: str) -> dict[str, float]:
        return {n.name: self.router.decode_tps(n, model) for n in self.router.serving(model)}

    def _slots(self, model: str) -> dict[str, int]:
        return {n.name: n.slots for n in self.router.serving(model)}

    def _schedule(
        self, request: RunRequest, model: str, subtasks: list[planning.Subtask]
    ) -> Schedule:
        pool = workers(self._speeds(model), self._slots(model))
        if not pool:
            raise NoNeuronForModel(f"no active neuron serves {model!r}")
        return schedule([s.expected_tokens for s in subtasks], pool, request.policy)

    async def _decompose(self, run_id: str, request: RunRequest) -> list[planning.Subtask]:
        brain = request.brain or request.model or self.default_model()
        schema = planning.plan_schema(request.max_subtasks)
        messages = planning.decompose_messages(request.task, request.max_subtasks)
        answer, _ = await self._ask(brain, messages, PLAN_TOKENS, schema)
        try:
            return planning.parse_plan(answer, request.max_subtasks)
        except planning.PlanError as first:
            self.events.publish(run_id, {"type": "plan_repair", "error": str(first)})
            messages = planning.repair_messages(request.task, request.max_subtasks, answer, first)
            again, _ = await self._ask(brain, messages, PLAN_TOKENS, schema)
            try:
                return planning.parse_plan(again, request.max_subtasks)
            except planning.PlanError as second:
                raise Direct(
                    f"the brain's plan was unusable twice ({first}; then {second})"
                ) from None

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
        request = ChatRequest(
            model=model, messages=messages, max_tokens=max_tokens, format=schema, options=options
        )
        job = Job(model, sum(len(m["content"]) for m in messages) // 4, max_tokens)
        return await self.dispatcher.open(
            job, lambda a: a.chat_stream(request), endpoint="orchestra", pinned=pinned
        )

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

    async def _direct(
        self,
        run_id: str,
        request: RunRequest,
        model: str,
        reason: str,
        timings: dict[str, Any],
        budget: int = 0,
    ) -> tuple[str, dict[str, Any]]:
        """The fastest suitable neuron answers the task itself; ``budget`` is the plan's
        total size when there was a plan (the same work, done by one neuron)."""
        await self._save(run_id, mode="direct", reason=reason)
        await self._publish(run_id)
        start = self.clock()
        answer, (neuron, stats) = await self._ask(
            model,
            [{"role": "user", "content": request.task}],
            budget or DIRECT_TOKENS,
            answer_of=run_id,
        )
        seconds = self.clock() - start
        timings |= {"parallel_s": round(seconds, 3), "synthesize_s": 0.0}
        timings.setdefault("decompose_s", 0.0)
        fastest = max(self._speeds(model).values(), default=0.0)
        solo = (stats.output_tokens or 0) / fastest if fastest else seconds
        extra = {
            "schedule": {
                "policy": request.policy,
                "lower_bound_s": round(solo, 3),
                "predicted_s": round(solo, 3),
                "efficiency": round(solo / seconds, 3) if seconds else None,
            },
            "baseline": {"neuron": neuron, "estimated_solo_s": round(solo, 3)},
        }
        return answer, extra

    async def _decomposed(
        self,
        run_id: str,
        request: RunRequest,
        model: str,
        subtasks: list[planning.Subtask],
        plan: Schedule,
        timings: dict[str, Any],
    ) -> tuple[str, dict[str, Any]]:
        await self._save(run_id, mode="decomposed", reason=None)
        existing = {
            d.index: d for d in await asyncio.to_thread(records.delegations, self.store, run_id)
        }
        fresh = [
            DelegationRow(
                run_id=run_id,
                index=p.index,
                subtask=subtasks[p.index].task,
                expected_tokens=subtasks[p.index].expected_tokens,
                neuron=p.neuron,
                status="pending",
                attempts=0,
            )
            for p in plan.placements
            if p.index not in existing
        ]
        if fresh:
            await asyncio.to_thread(records.add_delegations, self.store, fresh)
        early = {  # known before the work starts, so a live view can draw the bound
            "policy": plan.policy,
            "lower_bound_s": round(plan.lower_bound_s, 3),
            "predicted_s": round(plan.predicted_s, 3),
            "efficiency": None,
        }
        await self._save(run_id, schedule=early)
        await self._publish(run_id)
        if "parallel_s" in timings:  # resumed after the parallel phase had ended
            parallel = float(timings["parallel_s"])
        else:
            began = timings.setdefault("parallel_started_at", time.time())
            await self._save(run_id, timings=timings)
            await self._delegate_all(run_id, model, subtasks, plan, existing)
            parallel = time.time() - float(began)  # across a restart, the downtime counts
            timings["parallel_s"] = round(parallel, 3)
            await self._save(run_id, timings=timings)
        rows = await asyncio.to_thread(records.delegations, self.store, run_id)
        failed = [d.index for d in rows if d.status != "completed"]
        if failed:
            raise GanglionError(f"subtasks {failed} failed after {self.max_attempts} attempts each")
        start = self.clock()
        brain = request.brain or model
        parts = [(d.subtask, d.output or "") for d in rows]
        answer, _ = await self._ask(
            brain,
            planning.synthesize_messages(request.task, parts),
            synthesis_budget(subtasks),
            answer_of=run_id,
        )
        timings["synthesize_s"] = round(self.clock() - start, 3)
        speeds = self._speeds(model)
        fastest = max(speeds.values(), default=0.0)
        produced = sum(d.tokens or 0 for d in rows)
        solo = produced / fastest if fastest else parallel
        extra = {
            "schedule": {
                "policy": plan.policy,
                "lower_bound_s": round(plan.lower_bound_s, 3),
                "predicted_s": round(plan.predicted_s, 3),
                "efficiency": round(plan.lower_bound_s / parallel, 3) if parallel else None,
            },
            "baseline": {
                "neuron": max(speeds, key=speeds.__getitem__, default=None),
                "estimated_solo_s": round(solo, 3),
            },
        }
        return answer, extra

    async def _delegate_all(
        self,
        run_id: str,
        model: str,
        subtasks: list[planning.Subtask],
        plan: Schedule,
        existing: dict[int, DelegationRow],
    ) -> None:
        """Each neuron works through its share, as many at once as it has slots."""
        queues: dict[str, list[int]] = {}
        for placed in sorted(plan.placements, key=lambda p: p.start_s):
            done = existing.get(placed.index)
            if done is not None and done.status == "completed":
                continue  # never computed twice
            queues.setdefault(placed.neuron, []).append(placed.index)
        slots = self._slots(model)

        async def lane(neuron: str, queue: list[int]) -> None:
            while queue:
                index = queue.pop(0)
                await self._delegate(run_id, model, index, subtasks[index], neuron)

        await asyncio.gather(
            *(
                lane(neuron, queue)
                for neuron, queue in queues.items()
                for _ in range(max(1, slots.get(neuron, 1)))
            )
        )

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
        for estimate in self.router.plan(Job(model, 0, subtask.expected_tokens)):
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


def synthesis_budget(subtasks: list[planning.Subtask]) -> int:
    low, high = SYNTHESIS_TOKENS
    return min(max(sum(s.expected_tokens for s in subtasks) // SYNTHESIS_SHARE, low), high)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
