"""The stitched run, a pipeline rather than three phases in a row::

    t=0  brain writes the outline ──entry 1──entry 2──entry 3──┐ closing (brain) ─┐
         worker A writes the opening ─┐   │        │        │                    │
                                      part 1 (A) ──┼────────┼──── done ┐         │
                                                   part 2 (B) ─────────┤ done    │
                                                            part 3 (C) ┘ done    │
    answer: opening ▸ part 1 ▸ part 2 ▸ part 3 ▸ closing, each out as soon as it can be

Each part is dispatched the moment its outline entry is whole, with a budget sized so that
every worker finishes at the same time (:func:`~ganglion.orchestra.schedule.size_parts`).
The outline, each part and the timings are written to the store as they happen: a run
resumed after a restart keeps the outline it had, and computes no finished part again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ganglion.clock import aware
from ganglion.errors import BrokenMidStream, DispatchError, GanglionError, NeuronError
from ganglion.orchestra import stitch
from ganglion.orchestra.plan import MIN_EXPECTED_TOKENS, NotWorthIt, Subtask
from ganglion.orchestra.plan_stream import Part, PlanReader, Skipped, outline_problem
from ganglion.orchestra.schedule import Share, Sizing, Worker, lower_bound, size_parts, workers
from ganglion.routing import Job
from ganglion.store import runs as records
from ganglion.store.schema import DelegationRow, RunRow

if TYPE_CHECKING:
    from ganglion.orchestra.request import RunRequest
    from ganglion.orchestra.run import Orchestra


@dataclass(frozen=True)
class Forecast:
    """What splitting is predicted to cost, against the fastest neuron answering alone."""

    sizing: Sizing
    opener: str
    parts: int
    finish_s: float
    solo_s: float
    fastest: str


def forecast(
    total: int,
    pool: list[Worker],
    brain_tps: float,
    brain_neuron: str | None,
    max_parts: int,
    reading: dict[str, float] | None = None,
) -> Forecast:
    """Size the parts and predict the split run's end (from its start): the outline streams
    at ``brain_tps``; the opening is written by the fastest worker that is not the brain's
    neuron; the closing by the brain after the outline. ``reading`` is each worker's time to
    read a part's prompt."""
    per_entry = stitch.OUTLINE_ENTRY_TOKENS / brain_tps
    first = stitch.OUTLINE_PREFIX_TOKENS / brain_tps
    arrivals = [first + per_entry * (j + 1) for j in range(max_parts)]
    opener = next((w for w in pool if w.neuron != brain_neuron), pool[0])
    busy = {opener.neuron: stitch.OPENING_TOKENS / opener.tokens_per_second}
    if brain_neuron is not None:
        busy[brain_neuron] = max(busy.get(brain_neuron, 0.0), arrivals[-1])
    body = total - stitch.OPENING_TOKENS - stitch.CLOSING_TOKENS
    sizing = size_parts(max(body, len(pool) * 32), pool, arrivals, busy, delay=reading)
    parts = len(sizing.shares)
    outline_end = arrivals[parts - 1] + 1 / brain_tps
    closing_end = outline_end + stitch.CLOSING_TOKENS / brain_tps
    fastest = pool[0]
    return Forecast(
        sizing,
        opener.neuron,
        parts,
        max(sizing.finish_s, closing_end),
        total / fastest.tokens_per_second,
        fastest.neuron,
    )


@dataclass
class StitchedRun:
    """One run carried through the pipeline by ``orchestra``."""

    orchestra: Orchestra
    row: RunRow
    request: RunRequest
    model: str
    timings: dict[str, Any]
    stitcher: stitch.Stitcher = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)  # every piece: cancel all

    def __post_init__(self) -> None:
        self.stitcher = stitch.Stitcher(self._emit)

    @property
    def run_id(self) -> str:
        return self.row.id

    def _emit(self, text: str) -> None:
        if "first_token_s" not in self.timings:
            self.timings["first_token_s"] = self._since()
        self.orchestra.events.publish(self.run_id, {"type": "answer", "text": text})

    def _created(self) -> float:
        return _epoch(self.row.created_at)

    # planning ahead

    def _pool(self) -> list[Worker]:
        o = self.orchestra
        return workers(o._speeds(self.model), o._slots(self.model))

    def _brain(self) -> tuple[float, str]:
        """The brain's speed, and the neuron its outline will be written on."""
        o = self.orchestra
        brain = self.request.brain or self.model
        estimates = o.router.rank(Job(brain, 0, 64))
        if not estimates:
            raise o.dispatcher.unavailable(brain)
        neuron = estimates[0].neuron
        return o.router.decode_tps(neuron, brain), neuron.name

    def decide(self) -> Forecast:
        """The forecast; :class:`NotWorthIt` when ``auto`` finds that splitting would lose."""
        o = self.orchestra
        pool = self._pool()
        brain_tps, brain_neuron = self._brain()
        if not pool:
            raise o.dispatcher.unavailable(self.model)
        parts = self.request.max_subtasks
        sample = stitch.part_messages(self.row.task, ["a heading"] * parts, 0, parts, 100)
        prompt = sum(len(m["content"]) for m in sample) // 4
        reading = {
            n.name: prompt / o.router.prefill_tps(n, self.model)
            for n in o.router.serving(self.model)
        }
        ahead = forecast(self.request.answer_tokens, pool, brain_tps, brain_neuron, parts, reading)
        if self.request.decompose == "auto":
            if ahead.parts < 2:
                raise NotWorthIt(
                    f"only one part would pay off: {ahead.fastest} alone is as fast "
                    f"({ahead.solo_s:.1f} s)"
                )
            if ahead.finish_s >= ahead.solo_s:
                raise NotWorthIt(
                    f"splitting would take about {ahead.finish_s:.1f} s (outline, parts and "
                    f"closing in a pipeline) against {ahead.solo_s:.1f} s for "
                    f"{ahead.fastest} alone"
                )
        return ahead

    # the run

    async def run(self) -> tuple[str, dict[str, Any]]:
        o = self.orchestra
        plan = dict(self.row.plan or {})
        ahead = None
        if not plan.get("subtasks"):  # nothing dispatched yet: start from the decision
            ahead = self.decide()
            plan = {
                "subtasks": [],
                "planned": ahead.parts,
                "complete": False,
                "opener": ahead.opener,
            }
        # the opening first: the answer starts while the rest is written down
        self._tasks.append(asyncio.create_task(self._opening(plan)))
        try:
            await self._carry(plan, ahead)
        except BaseException as error:  # nothing of the run goes on without it
            for task in self._tasks:
                task.cancel()
            if self.stitcher.written:  # the answer began: say it starts again, or stops
                restart = {"type": "answer_restart", "reason": str(error) or repr(error)}
                o.events.publish(self.run_id, restart)
                self.timings.pop("first_token_s", None)  # that text is void
            raise
        return await self._finish(plan)

    async def _carry(self, plan: dict[str, Any], ahead: Forecast | None) -> None:
        """Record the forecast, start the parts already known (a resumed run's), stream the
        outline into more, then the closing; return when every piece is done."""
        o = self.orchestra
        if ahead is not None:
            sizing = ahead.sizing
            predicted = sizing.finish_s - sizing.first_start_s
            early = self._schedule([float(s.tokens) for s in sizing.shares], predicted)
            self.timings["predicted_parallel_s"] = round(predicted, 3)
            self.timings["predicted_finish_s"] = round(ahead.finish_s, 3)
            await o._save(self.run_id, mode="decomposed", reason=None, plan=plan)
            await o._save(self.run_id, schedule=early, timings=self.timings)
            await o._publish(self.run_id)
        rows = [*await asyncio.to_thread(records.delegations, o.store, self.run_id)]
        rows += await self._unrecorded(plan, {d.index for d in rows})
        existing = {d.index: d for d in rows}
        resumed = [self._subtask(plan, d) for d in rows]
        for d, subtask in zip(rows, resumed, strict=True):
            self.stitcher.expect(d.index, subtask.heading)
            if d.status == "completed":
                self.stitcher.add(stitch.part_key(d.index), (d.output or "").strip(), done=True)
            else:
                self._start_part(d.index, subtask, d.neuron, plan)
        if ahead is not None:
            await self._outline(plan, ahead, existing)
        else:  # resumed: the outline is what had arrived, even if it was cut short
            plan["complete"] = True
        self._tasks.append(asyncio.create_task(self._closing(plan)))
        self.stitcher.seal()
        await asyncio.gather(*self._tasks)

    async def _unrecorded(self, plan: dict[str, Any], recorded: set[int]) -> list[DelegationRow]:
        """Rows for the outline's entries a restart caught before their delegation was
        written (the plan is saved first); the router picks their neurons."""
        missing = [
            DelegationRow(
                run_id=self.run_id,
                index=index,
                subtask=entry["task"],
                expected_tokens=entry["expected_tokens"],
                neuron=None,
                status="pending",
                attempts=0,
            )
            for index, entry in enumerate(plan.get("subtasks") or [])
            if index not in recorded
        ]
        if missing:
            await asyncio.to_thread(records.add_delegations, self.orchestra.store, missing)
        return missing

    @staticmethod
    def _subtask(plan: dict[str, Any], row: DelegationRow) -> Subtask:
        listed = plan.get("subtasks") or []
        entry = listed[row.index] if row.index < len(listed) else {}
        tokens = row.expected_tokens or MIN_EXPECTED_TOKENS
        return Subtask(row.subtask, tokens, entry.get("heading") or row.subtask)

    async def _outline(
        self, plan: dict[str, Any], ahead: Forecast, existing: dict[int, DelegationRow]
    ) -> None:
        """Stream the outline from the brain; dispatch each entry the moment it is whole."""
        o = self.orchestra
        shares = ahead.sizing.shares
        started = o.clock()
        try:
            first = await self._stream_outline(plan, shares, existing, None)
            if first is not None and not plan["subtasks"]:
                o.events.publish(self.run_id, {"type": "plan_repair", "error": first[1]})
                second = await self._stream_outline(plan, shares, existing, first)
                if second is not None and not plan["subtasks"]:
                    raise NotWorthIt(
                        f"the brain's outline was unusable twice ({first[1]}; then {second[1]})"
                    )
        finally:
            self.timings["decompose_s"] = round(o.clock() - started, 3)
        plan["complete"] = True
        await o._save(self.run_id, plan=plan, timings=self.timings)

    async def _stream_outline(
        self,
        plan: dict[str, Any],
        shares: list[Share],
        existing: dict[int, DelegationRow],
        repair: tuple[str, str] | None,
    ) -> tuple[str, str] | None:
        """Ask the brain for the outline and dispatch each entry as it arrives. Returns
        None, or (the text, what is wrong) when it gave no usable section."""
        o = self.orchestra
        brain = self.request.brain or self.model
        planned = int(plan.get("planned") or self.request.max_subtasks)
        messages = stitch.outline_messages(self.row.task, planned)
        if repair is not None:
            messages += [
                {"role": "assistant", "content": repair[0]},
                {
                    "role": "user",
                    "content": f"That outline is unusable: {repair[1]}. Again, fixed.",
                },
            ]
        schema = stitch.outline_schema(planned)
        budget = stitch.outline_budget(planned)
        whole = False
        for attempt in range(1, o.max_attempts + 1):
            reader = PlanReader(planned)
            try:
                async with contextlib.aclosing(
                    o.stream_text(brain, messages, budget, schema)
                ) as texts:
                    async for text in texts:
                        for entry in reader.feed(text)[1]:
                            await self._arrived(entry, plan, shares, existing)
                        whole = len(plan["subtasks"]) >= len(shares)
                        if whole:  # every planned part runs: free the brain for the closing
                            break
            except BrokenMidStream as error:
                if reader.parts:  # the parts already running are the plan
                    plan["cut_short"] = str(error)
                elif attempt < o.max_attempts:
                    continue  # nothing dispatched yet: ask again (the router moves it)
                else:
                    raise
            break
        for entry in [] if whole else reader.finish():
            await self._arrived(entry, plan, shares, existing)
        return None if reader.parts else (reader.text, outline_problem(reader))

    async def _arrived(
        self,
        entry: Part | Skipped,
        plan: dict[str, Any],
        shares: list[Share],
        existing: dict[int, DelegationRow],
    ) -> None:
        o = self.orchestra
        if isinstance(entry, Skipped):
            plan.setdefault("skipped", []).append({"index": entry.index, "reason": entry.reason})
            o.events.publish(self.run_id, {"type": "plan_skip", **plan["skipped"][-1]})
            return
        index = len(plan["subtasks"])
        if index >= len(shares):
            return
        share = shares[index]
        subtask = Subtask(entry.subtask.task, share.tokens, entry.subtask.heading)
        plan["subtasks"].append(subtask.as_dict())
        row = DelegationRow(
            run_id=self.run_id,
            index=index,
            subtask=subtask.task,
            expected_tokens=subtask.expected_tokens,
            neuron=share.neuron,
            status="pending",
            attempts=0,
        )
        await o._save(self.run_id, plan=plan)  # first: a resumed run rebuilds rows from it
        await asyncio.to_thread(records.add_delegations, o.store, [row])
        existing[index] = row
        self.stitcher.expect(index, subtask.heading)
        self.timings.setdefault("parallel_started_at", time.time())
        self._start_part(index, subtask, share.neuron, plan)

    def _start_part(
        self, index: int, subtask: Subtask, neuron: str | None, plan: dict[str, Any]
    ) -> None:
        self._tasks.append(asyncio.create_task(self._part(index, subtask, neuron, plan)))

    async def _part(
        self, index: int, subtask: Subtask, neuron: str | None, plan: dict[str, Any]
    ) -> None:
        headings = _headings(plan)
        planned = int(plan.get("planned") or len(headings))
        messages = stitch.part_messages(
            self.row.task, headings, index, planned, subtask.expected_tokens
        )
        output = await self.orchestra._delegate(
            self.run_id, self.model, index, subtask, neuron, messages
        )
        if output is None:  # the run cannot be whole: it fails now, and nothing goes on
            o = self.orchestra
            raise GanglionError(
                f"subtask {index} ({subtask.heading!r}) failed after {o.max_attempts} attempts "
                "on every neuron that could take it"
            )
        self.stitcher.add(stitch.part_key(index), output.strip(), done=True)

    async def _opening(self, plan: dict[str, Any]) -> None:
        text = plan.get("opening")
        if text is None:
            messages = stitch.opening_messages(self.row.task)
            opener = plan.get("opener")
            text = await self._aside(
                "opening", messages, stitch.OPENING_TOKENS, stitch.OPENING, None, opener
            )
            plan["opening"] = text
        else:
            self.stitcher.add(stitch.OPENING, text)
        self.stitcher.add(stitch.OPENING, "", done=True)

    async def _closing(self, plan: dict[str, Any]) -> None:
        text = plan.get("closing")
        if text is None:
            messages = stitch.closing_messages(self.row.task, _headings(plan))
            brain = self.request.brain or self.model
            text = await self._aside("closing", messages, stitch.CLOSING_TOKENS, None, brain)
            plan["closing"] = text
        self.stitcher.add(stitch.CLOSING, f"\n\n{text.strip()}" if text.strip() else "", done=True)

    async def _aside(
        self,
        name: str,
        messages: list[dict[str, str]],
        tokens: int,
        live: tuple[str, int] | None,
        model: str | None = None,
        pinned: str | None = None,
    ) -> str:
        """A short piece around the parts, streamed into the answer under ``live`` when given
        (the opening: it ends at its first paragraph).
        One that cannot be written (or only in part) is left at what arrived. Its span, in
        seconds from the run's creation, and its neuron go into ``timings[name]``."""
        span: dict[str, Any] = {"start_s": self._since(), "end_s": None, "neuron": None}
        self.timings[name] = span
        if live is None:  # (the opening's start is recorded with the forecast, after it)
            await self._record()
        pieces: list[str] = []
        stream = self.orchestra.stream_text(
            model or self.model,
            messages,
            tokens,
            pinned=pinned,
            answered_by=lambda neuron: span.update(neuron=neuron),
            stop=stitch.OPENING_STOP if live == stitch.OPENING else None,
        )
        try:
            with contextlib.suppress(DispatchError, NeuronError, BrokenMidStream):
                async for text in stream:
                    pieces.append(text)
                    if live is not None:
                        self.stitcher.add(live, text)
        finally:
            span["end_s"] = self._since()
        await self._record()
        return "".join(pieces)

    async def _record(self) -> None:
        """Write the timings down and tell the run's followers (the live timeline)."""
        await self.orchestra._save(self.run_id, timings=self.timings)
        await self.orchestra._publish(self.run_id)

    def _since(self) -> float:
        return round(time.time() - self._created(), 3)

    async def _finish(self, plan: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        o = self.orchestra
        await o._save(self.run_id, plan=plan)
        rows = await asyncio.to_thread(records.delegations, o.store, self.run_id)
        failed = [d.index for d in rows if d.status != "completed"]
        if failed:
            raise GanglionError(f"subtasks {failed} failed after {o.max_attempts} attempts each")
        began = float(self.timings.get("parallel_started_at") or time.time())
        ends = [d.finished_at for d in rows if d.finished_at is not None]
        last = max((_epoch(e) for e in ends), default=time.time())
        parallel = max(last - began, 0.0)
        self.timings["parallel_s"] = round(parallel, 3)
        self.timings["synthesize_s"] = round(max(time.time() - last, 0.0), 3)
        speeds = o._speeds(self.model)
        fastest = max(speeds.values(), default=0.0)
        around = sum(_tokens(plan.get(key)) for key in ("opening", "closing"))
        solo = (sum(d.tokens or 0 for d in rows) + around) / fastest if fastest else parallel
        produced = [float(d.tokens or d.expected_tokens or 0) for d in rows]
        predicted = float(self.timings.get("predicted_parallel_s") or 0.0)
        extra = {
            "schedule": self._schedule(produced, predicted, parallel),
            "baseline": {
                "neuron": max(speeds, key=speeds.__getitem__, default=None),
                "estimated_solo_s": round(solo, 3),
            },
        }
        return self.stitcher.text, extra

    def _schedule(
        self, sizes: list[float], predicted: float, parallel: float | None = None
    ) -> dict[str, Any]:
        """The run's ``schedule`` record: LB of ``sizes`` on the workers, the prediction,
        and, once the parts are done, efficiency = LB / ``parallel``."""
        bound = round(lower_bound(sizes, [w.tokens_per_second for w in self._pool()]), 3)
        return {
            "policy": "speed",
            "lower_bound_s": bound,
            "predicted_s": round(predicted, 3),
            "efficiency": round(bound / parallel, 3) if parallel else None,
        }


def _headings(plan: dict[str, Any]) -> list[str]:
    return [entry.get("heading") or entry["task"] for entry in plan.get("subtasks") or []]


def _tokens(text: object) -> int:
    """About how many tokens a piece of text is (four characters a token)."""
    return len(text) // 4 if isinstance(text, str) else 0


def _epoch(moment: datetime) -> float:
    return aware(moment).timestamp()
