"""The rewritten run (``synthesis: "rewrite"``), three phases in a row::

    decide ─▶ decompose (brain, JSON schema) ─▶ decide again with the plan
        │                                          │
        └── direct: the fastest neuron answers ◀───┘ when splitting cannot win
                                                   │
                     schedule (Q||Cmax) ─▶ delegations in parallel ─▶ synthesize (brain)

The brain writes the whole plan before any part starts, the parts are placed as it sized
them, and the brain then writes the answer again from the parts. The stitched pipeline
(:mod:`ganglion.orchestra.pipeline`) is the default; this path is kept for answers that must
read as one text. Every step is written to the store as it happens, so a resumed run keeps
its plan and computes no completed part again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ganglion.errors import GanglionError, NoNeuronForModel
from ganglion.orchestra import plan as planning
from ganglion.orchestra.plan import NotWorthIt
from ganglion.orchestra.schedule import Schedule, lower_bound, schedule, workers
from ganglion.store import runs as records
from ganglion.store.schema import DelegationRow, RunRow

if TYPE_CHECKING:
    from ganglion.orchestra.request import RunRequest
    from ganglion.orchestra.run import Orchestra

PLAN_TOKENS = 600
PLAN_ESTIMATE_TOKENS = 150  # what a plan usually costs the brain to write
SYNTHESIS_SHARE = 4  # the synthesis is budgeted a quarter of the parts it combines
SYNTHESIS_TOKENS = (64, 512)


@dataclass
class RewriteRun:
    """One run carried through plan, parts and rewrite by ``orchestra``."""

    orchestra: Orchestra
    row: RunRow
    request: RunRequest
    model: str
    timings: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.row.id

    async def run(self) -> tuple[str, dict[str, Any]]:
        """The answer and the run's ``schedule`` and ``baseline``; :class:`NotWorthIt`
        (with the plan's size as the direct answer's budget) when splitting would lose."""
        o = self.orchestra
        subtasks: list[planning.Subtask] = []
        try:
            if self.row.plan is None:
                self._worth_splitting()
                start = o.clock()
                try:
                    subtasks = await self._decompose()
                finally:
                    self.timings["decompose_s"] = round(o.clock() - start, 3)
                await o._save(
                    self.run_id,
                    plan={"subtasks": [s.as_dict() for s in subtasks]},
                    timings=self.timings,
                )
            else:
                subtasks = [planning.Subtask(**s) for s in self.row.plan["subtasks"]]
            placed = self._schedule(subtasks)
            self._still_worth_it(placed, subtasks)
        except NotWorthIt as why:
            why.budget = sum(s.expected_tokens for s in subtasks)
            raise
        return await self._decomposed(subtasks, placed)

    # deciding

    def _worth_splitting(self) -> None:
        """Before asking the brain: could splitting win even if the work split perfectly?

        The task is taken to need ``answer_tokens`` of answer; planning costs
        :data:`PLAN_ESTIMATE_TOKENS` and synthesis a quarter of the answer, both on the
        fastest neuron; the parallel phase is its lower bound in ``max_subtasks`` equal parts.
        """
        o, request = self.orchestra, self.request
        if request.decompose == "always":
            return
        pool = workers(o._speeds(self.model), o._slots(self.model))
        if len(pool) < 2:
            raise NotWorthIt(
                f"only one neuron slot serves {self.model}: nothing can run in parallel"
            )
        fastest = pool[0].tokens_per_second
        answer = request.answer_tokens
        parts = [answer / request.max_subtasks] * request.max_subtasks
        overhead = (PLAN_ESTIMATE_TOKENS + answer / SYNTHESIS_SHARE) / fastest
        split = overhead + lower_bound(parts, [w.tokens_per_second for w in pool])
        solo = answer / fastest
        if split >= solo:
            raise NotWorthIt(
                f"splitting would take about {split:.1f} s (planning, parallel work, synthesis) "
                f"against {solo:.1f} s for {pool[0].neuron} alone"
            )

    def _still_worth_it(self, placed: Schedule, subtasks: list[planning.Subtask]) -> None:
        if self.request.decompose != "auto":
            return
        fastest = max(self.orchestra._speeds(self.model).values())
        solo = sum(s.expected_tokens for s in subtasks) / fastest
        synthesis = synthesis_budget(subtasks) / fastest
        if placed.predicted_s + synthesis >= solo:
            raise NotWorthIt(
                f"the plan would take {placed.predicted_s + synthesis:.1f} s in parallel with "
                f"synthesis, against {solo:.1f} s for the fastest neuron alone"
            )

    def _schedule(self, subtasks: list[planning.Subtask]) -> Schedule:
        o = self.orchestra
        pool = workers(o._speeds(self.model), o._slots(self.model))
        if not pool:
            raise NoNeuronForModel(f"no active neuron serves {self.model!r}")
        return schedule([s.expected_tokens for s in subtasks], pool, self.request.policy)

    async def _decompose(self) -> list[planning.Subtask]:
        o, request = self.orchestra, self.request
        brain = request.brain or request.model or o.default_model()
        schema = planning.plan_schema(request.max_subtasks)
        messages = planning.decompose_messages(request.task, request.max_subtasks)
        answer, _ = await o._ask(brain, messages, PLAN_TOKENS, schema)
        try:
            return planning.parse_plan(answer, request.max_subtasks)
        except planning.PlanError as first:
            o.events.publish(self.run_id, {"type": "plan_repair", "error": str(first)})
            messages = planning.repair_messages(request.task, request.max_subtasks, answer, first)
            again, _ = await o._ask(brain, messages, PLAN_TOKENS, schema)
            try:
                return planning.parse_plan(again, request.max_subtasks)
            except planning.PlanError as second:
                raise NotWorthIt(
                    f"the brain's plan was unusable twice ({first}; then {second})"
                ) from None

    # the parts and the rewrite

    async def _decomposed(
        self, subtasks: list[planning.Subtask], placed: Schedule
    ) -> tuple[str, dict[str, Any]]:
        o, run_id, timings = self.orchestra, self.run_id, self.timings
        await o._save(run_id, mode="decomposed", reason=None)
        existing = {
            d.index: d for d in await asyncio.to_thread(records.delegations, o.store, run_id)
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
            for p in placed.placements
            if p.index not in existing
        ]
        if fresh:
            await asyncio.to_thread(records.add_delegations, o.store, fresh)
        # known before the work starts, so a live view can draw the bound
        await o._save(run_id, schedule=_schedule_record(placed, None))
        await o._publish(run_id)
        if "parallel_s" in timings:  # resumed after the parallel phase had ended
            parallel = float(timings["parallel_s"])
        else:
            began = timings.setdefault("parallel_started_at", time.time())
            await o._save(run_id, timings=timings)
            await self._delegate_all(subtasks, placed, existing)
            parallel = time.time() - float(began)  # across a restart, the downtime counts
            timings["parallel_s"] = round(parallel, 3)
            await o._save(run_id, timings=timings)
        rows = await asyncio.to_thread(records.delegations, o.store, run_id)
        failed = [d.index for d in rows if d.status != "completed"]
        if failed:
            raise GanglionError(f"subtasks {failed} failed after {o.max_attempts} attempts each")
        start = o.clock()
        parts = [(d.subtask, d.output or "") for d in rows]
        answer, _ = await o._ask(
            self.request.brain or self.model,
            planning.synthesize_messages(self.request.task, parts),
            synthesis_budget(subtasks),
            answer_of=run_id,
        )
        timings["synthesize_s"] = round(o.clock() - start, 3)
        speeds = o._speeds(self.model)
        fastest = max(speeds.values(), default=0.0)
        produced = sum(d.tokens or 0 for d in rows)
        solo = produced / fastest if fastest else parallel
        extra = {
            "schedule": _schedule_record(placed, parallel),
            "baseline": {
                "neuron": max(speeds, key=speeds.__getitem__, default=None),
                "estimated_solo_s": round(solo, 3),
            },
        }
        return answer, extra

    async def _delegate_all(
        self,
        subtasks: list[planning.Subtask],
        placed: Schedule,
        existing: dict[int, DelegationRow],
    ) -> None:
        """Each neuron works through its share, as many at once as it has slots."""
        o = self.orchestra
        queues: dict[str, list[int]] = {}
        for placement in sorted(placed.placements, key=lambda p: p.start_s):
            done = existing.get(placement.index)
            if done is not None and done.status == "completed":
                continue  # never computed twice
            queues.setdefault(placement.neuron, []).append(placement.index)
        slots = o._slots(self.model)

        async def lane(neuron: str, queue: list[int]) -> None:
            while queue:
                index = queue.pop(0)
                await o._delegate(self.run_id, self.model, index, subtasks[index], neuron)

        await asyncio.gather(
            *(
                lane(neuron, queue)
                for neuron, queue in queues.items()
                for _ in range(max(1, slots.get(neuron, 1)))
            )
        )


def synthesis_budget(subtasks: list[planning.Subtask]) -> int:
    low, high = SYNTHESIS_TOKENS
    return min(max(sum(s.expected_tokens for s in subtasks) // SYNTHESIS_SHARE, low), high)


def _schedule_record(placed: Schedule, parallel: float | None) -> dict[str, Any]:
    """The run's ``schedule``; efficiency = LB / the parallel phase, once it is known."""
    return {
        "policy": placed.policy,
        "lower_bound_s": round(placed.lower_bound_s, 3),
        "predicted_s": round(placed.predicted_s, 3),
        "efficiency": round(placed.lower_bound_s / parallel, 3) if parallel else None,
    }
