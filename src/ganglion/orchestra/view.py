"""A run as the API, the events, the CLI and the dashboard show it: ``run_view`` and its
``timeline`` (what the monitor's chart draws), from the store's rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ganglion.store.schema import DelegationRow, RunRow


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(stamp: datetime) -> datetime:
    """SQLite returns naive datetimes; ours are all UTC."""
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def run_view(row: RunRow, rows: list[DelegationRow], now: datetime | None = None) -> dict[str, Any]:
    """A run as ``GET /fleet/runs/{id}`` and ``ganglion run --json`` show it. ``now`` (for
    a run under way) is when its ``timeline`` is measured to."""
    timings = row.timings or {}
    total = timings.get("total_s")
    baseline = row.baseline or {"neuron": None, "estimated_solo_s": None}
    solo = baseline.get("estimated_solo_s")
    return {
        "id": row.id,
        "status": row.status,
        "task": row.task,
        "model": row.model,
        "brain": row.brain,
        "mode": row.mode,
        "reason": row.reason,
        "answer": row.answer,
        "plan": row.plan or {"subtasks": []},
        "timings": {
            key: timings.get(key)
            for key in (
                "decompose_s",
                "parallel_s",
                "synthesize_s",
                "total_s",
                "first_token_s",
                "predicted_finish_s",
            )
        },
        "synthesis": timings.get("synthesis", "rewrite"),
        "schedule": row.schedule
        or {"policy": row.policy, "lower_bound_s": None, "predicted_s": None, "efficiency": None},
        "baseline": baseline,
        "speedup_estimate": round(solo / total, 3) if solo and total else None,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "timeline": timeline(row, rows, now or utcnow()),
        "delegations": [
            {
                "index": d.index,
                "subtask": d.subtask,
                "neuron": d.neuron,
                "status": d.status,
                "attempts": d.attempts,
                "expected_tokens": d.expected_tokens,
                "tokens": d.tokens,
                "seconds": d.seconds,
                "tokens_per_second": round(d.tokens / d.seconds, 2)
                if d.tokens and d.seconds
                else None,
                "output": d.output,
                "error": d.error,
                "started_at": _utc_iso(d.started_at),
                "finished_at": _utc_iso(d.finished_at),
                "start_s": _since(row.created_at, d.started_at),
                "end_s": _since(row.created_at, d.finished_at),
            }
            for d in rows
        ],
    }


def timeline(row: RunRow, rows: list[DelegationRow], now: datetime) -> dict[str, Any]:
    """When each phase ran, in seconds from the run's creation: what the monitor's Gantt
    chart draws. A phase not reached is ``None``; one under way has ``end_s`` ``None``.
    ``parallel`` is the delegations' phase, or the direct answer when ``mode`` is direct."""
    timings = row.timings or {}
    decompose_s, parallel_s = timings.get("decompose_s"), timings.get("parallel_s")
    starts = [d.started_at for d in rows if d.started_at is not None]
    ends = [d.finished_at for d in rows if d.finished_at is not None]
    all_done = bool(rows) and all(d.status == "completed" for d in rows)
    decompose = parallel = synthesize = None
    if decompose_s or row.plan is not None:
        decompose = {"start_s": 0.0, "end_s": decompose_s}
    elif row.mode is None and row.status == "running":
        decompose = {"start_s": 0.0, "end_s": None}
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
        parallel = {"start_s": begin, "end_s": end}
        if row.mode == "decomposed" and end is not None and row.status != "failed":
            synthesize = {"start_s": end, "end_s": _since(row.created_at, row.finished_at)}
    return {
        "elapsed_s": _since(row.created_at, row.finished_at or now),
        "first_token_s": timings.get("first_token_s"),
        "decompose": decompose,
        "parallel": parallel,
        "synthesize": synthesize,
    }


def _utc_iso(stamp: datetime | None) -> str | None:
    return aware(stamp).isoformat() if stamp else None


def _since(origin: datetime | None, stamp: datetime | None) -> float | None:
    if origin is None or stamp is None:
        return None
    return round((aware(stamp) - aware(origin)).total_seconds(), 3)
