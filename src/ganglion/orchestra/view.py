"""A run as the API, the events, the CLI and the dashboard show it: :class:`RunView` and
its :class:`RunTimeline` (what the monitor's chart and ``ganglion top`` draw), built from
the store's rows by :func:`view_of`.

One model, one contract: ``GET /fleet/runs/{id}`` answers with it, the ``run`` events
carry its JSON, ``ganglion run`` and ``ganglion top`` read it back. New fields are
additions; the existing ones keep their names and meanings (docs/orchestrator.md)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ganglion.clock import aware, utcnow

if TYPE_CHECKING:  # the CLI reads views without loading the store's ORM
    from ganglion.store.schema import DelegationRow, RunRow

TIMING_KEYS = (
    "decompose_s",
    "parallel_s",
    "synthesize_s",
    "total_s",
    "first_token_s",
    "predicted_finish_s",
)


class RunTimings(BaseModel):
    """Where a run's time went, in seconds; ``None`` until measured."""

    decompose_s: float | None = None
    parallel_s: float | None = None
    synthesize_s: float | None = None
    total_s: float | None = None
    first_token_s: float | None = None
    predicted_finish_s: float | None = None


class ScheduleView(BaseModel):
    policy: str | None = None
    lower_bound_s: float | None = None
    predicted_s: float | None = None
    efficiency: float | None = None


class BaselineView(BaseModel):
    neuron: str | None = None
    estimated_solo_s: float | None = None


class Span(BaseModel):
    """A stretch of a run, in seconds from its creation; ``end_s`` is ``None`` while it
    goes on."""

    start_s: float | None
    end_s: float | None = None


class AsideSpan(Span):
    """A stitched run's opening or closing: a short piece written beside the parts."""

    neuron: str | None = None


class RunTimeline(BaseModel):
    """When each phase ran: what the monitor's Gantt chart draws. The bars overlap in a
    stitched run: the outline (``decompose``), the ``opening``, every delegation (their own
    ``start_s``/``end_s``) and the ``closing``."""

    elapsed_s: float | None
    first_token_s: float | None = None
    decompose: Span | None = None
    parallel: Span | None = None
    synthesize: Span | None = None
    opening: AsideSpan | None = None
    closing: AsideSpan | None = None


class DelegationView(BaseModel):
    index: int
    subtask: str
    neuron: str | None = None
    status: str
    attempts: int = 0
    expected_tokens: int | None = None
    tokens: int | None = None
    seconds: float | None = None
    tokens_per_second: float | None = None
    output: str | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    start_s: float | None = None
    end_s: float | None = None


class RunView(BaseModel):
    """A run as ``GET /fleet/runs/{id}`` and ``ganglion run --json`` show it; listings
    leave ``delegations`` ``None``."""

    id: str
    status: str
    task: str
    model: str | None = None
    brain: str | None = None
    mode: str | None = None
    reason: str | None = None
    answer: str | None = None
    plan: dict[str, Any] = Field(default_factory=lambda: {"subtasks": []})
    timings: RunTimings = Field(default_factory=RunTimings)
    synthesis: str = "rewrite"
    schedule: ScheduleView = Field(default_factory=ScheduleView)
    baseline: BaselineView = Field(default_factory=BaselineView)
    speedup_estimate: float | None = None
    created_at: str | None = None
    finished_at: str | None = None
    timeline: RunTimeline
    delegations: list[DelegationView] | None = None


def view_of(row: RunRow, rows: list[DelegationRow], now: datetime | None = None) -> RunView:
    """The run's view. ``now`` (for a run under way) is when its ``timeline`` is measured
    to."""
    timings = row.timings or {}
    total = timings.get("total_s")
    baseline = BaselineView.model_validate(row.baseline or {})
    solo = baseline.estimated_solo_s
    return RunView(
        id=row.id,
        status=row.status,
        task=row.task,
        model=row.model,
        brain=row.brain,
        mode=row.mode,
        reason=row.reason,
        answer=row.answer,
        plan=row.plan or {"subtasks": []},
        timings=RunTimings.model_validate({key: timings.get(key) for key in TIMING_KEYS}),
        synthesis=timings.get("synthesis", "rewrite"),
        schedule=ScheduleView.model_validate(row.schedule or {"policy": row.policy}),
        baseline=baseline,
        speedup_estimate=round(solo / total, 3) if solo and total else None,
        created_at=row.created_at.isoformat() if row.created_at else None,
        finished_at=row.finished_at.isoformat() if row.finished_at else None,
        timeline=timeline(row, rows, now or utcnow()),
        delegations=[delegation_view(row, d) for d in rows],
    )


def run_view(row: RunRow, rows: list[DelegationRow], now: datetime | None = None) -> dict[str, Any]:
    """:func:`view_of` as JSON: what the API sends and the events carry."""
    return view_of(row, rows, now).model_dump(mode="json")


def delegation_view(row: RunRow, d: DelegationRow) -> DelegationView:
    return DelegationView(
        index=d.index,
        subtask=d.subtask,
        neuron=d.neuron,
        status=d.status,
        attempts=d.attempts,
        expected_tokens=d.expected_tokens,
        tokens=d.tokens,
        seconds=d.seconds,
        tokens_per_second=round(d.tokens / d.seconds, 2) if d.tokens and d.seconds else None,
        output=d.output,
        error=d.error,
        started_at=_utc_iso(d.started_at),
        finished_at=_utc_iso(d.finished_at),
        start_s=_since(row.created_at, d.started_at),
        end_s=_since(row.created_at, d.finished_at),
    )


def timeline(row: RunRow, rows: list[DelegationRow], now: datetime) -> RunTimeline:
    """When each phase ran, in seconds from the run's creation. A phase not reached is
    ``None``; one under way has ``end_s`` ``None``. ``parallel`` is the delegations'
    phase, or the direct answer when ``mode`` is direct."""
    timings = row.timings or {}
    decompose_s, parallel_s = timings.get("decompose_s"), timings.get("parallel_s")
    starts = [d.started_at for d in rows if d.started_at is not None]
    ends = [d.finished_at for d in rows if d.finished_at is not None]
    all_done = bool(rows) and all(d.status == "completed" for d in rows)
    decompose = parallel = synthesize = None
    if decompose_s or row.plan is not None:
        decompose = Span(start_s=0.0, end_s=decompose_s)
    elif row.mode is None and row.status == "running":
        decompose = Span(start_s=0.0, end_s=None)
    if row.mode is not None:
        began = timings.get("parallel_started_at")  # wall clock, seconds since the epoch
        begin: float | None
        if began is not None and row.created_at is not None:
            begin = round(float(began) - aware(row.created_at).timestamp(), 3)
        else:
            begin = _since(row.created_at, min(starts)) if starts else decompose_s or 0.0
        end = None if parallel_s is None or begin is None else round(begin + parallel_s, 3)
        if end is None and all_done:
            end = _since(row.created_at, max(ends))
        parallel = Span(start_s=begin, end_s=end)
        if row.mode == "decomposed" and end is not None and row.status != "failed":
            synthesize = Span(start_s=end, end_s=_since(row.created_at, row.finished_at))
    return RunTimeline(
        elapsed_s=_since(row.created_at, row.finished_at or now),
        first_token_s=timings.get("first_token_s"),
        decompose=decompose,
        parallel=parallel,
        synthesize=synthesize,
        opening=_aside(timings.get("opening")),
        closing=_aside(timings.get("closing")),
    )


def _aside(recorded: object) -> AsideSpan | None:
    """The stitched pipeline's ``timings["opening"]`` or ``["closing"]``; ``None`` in a
    rewrite or an older run."""
    return AsideSpan.model_validate(recorded) if isinstance(recorded, dict) else None


def _utc_iso(stamp: datetime | None) -> str | None:
    return aware(stamp).isoformat() if stamp else None


def _since(origin: datetime | None, stamp: datetime | None) -> float | None:
    if origin is None or stamp is None:
        return None
    return round((aware(stamp) - aware(origin)).total_seconds(), 3)
