"""The queries the orchestrator needs: runs and their delegations.

A running run is carried by one gateway replica at a time, the one holding its lease
(``runs.owner`` until ``runs.lease_until``). Claiming and every write a carrier makes are
single conditional UPDATEs, so two replicas on one database cannot both win: a write with
``holder`` set lands only while that replica still holds the run and the run is still
running, and reports whether it landed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Update, exists, or_, select, update
from sqlalchemy.orm import Session

from ganglion.store.queries import Store
from ganglion.store.schema import DelegationRow, RunRow


def add_run(store: Store, row: RunRow) -> None:
    with store.session() as session:
        session.add(row)
        session.commit()


def _changed(session: Session, query: Update) -> int:
    """Run an UPDATE; how many rows it changed."""
    return cast(CursorResult[Any], session.execute(query)).rowcount


def held_by(run_id: str, holder: str) -> ColumnElement[bool]:
    """The run is still running and ``holder`` still carries it."""
    return exists().where(RunRow.id == run_id, RunRow.owner == holder, RunRow.status == "running")


def update_run(store: Store, run_id: str, holder: str | None = None, **values: Any) -> bool:
    """Write ``values``; with ``holder``, only while that replica carries the run."""
    return _write(store, update(RunRow).where(RunRow.id == run_id), run_id, holder, values)


def _write(
    store: Store, query: Update, run_id: str, holder: str | None, values: dict[str, Any]
) -> bool:
    if holder is not None:
        query = query.where(held_by(run_id, holder))
    with store.session() as session:
        landed = _changed(session, query.values(**values)) == 1
        session.commit()
    return landed


def _free(holder: str, now: float) -> ColumnElement[bool]:
    """Nobody else carries the run: never claimed, ``holder``'s own, or its lease ran out."""
    return or_(RunRow.owner.is_(None), RunRow.owner == holder, RunRow.lease_until < now)


def claim_run(store: Store, run_id: str, holder: str, now: float, until: float) -> bool:
    """Take the run for ``holder`` when it is running and free: never claimed, already
    ``holder``'s (a restarted replica), or its lease ran out (its replica stopped renewing)."""
    query = (
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.status == "running", _free(holder, now))
        .values(owner=holder, lease_until=until)
    )
    with store.session() as session:
        claimed = _changed(session, query) == 1
        session.commit()
    return claimed


def renew_leases(store: Store, holder: str, run_ids: list[str], until: float) -> set[str]:
    """Extend ``holder``'s lease on ``run_ids``; returns those another replica has taken
    (still running, carried elsewhere). A run that ended here in the meantime is not among
    them: its carrier is finishing it."""
    if not run_ids:
        return set()
    running = (RunRow.id.in_(run_ids), RunRow.status == "running")
    with store.session() as session:
        session.execute(
            update(RunRow).where(*running, RunRow.owner == holder).values(lease_until=until)
        )
        taken = select(RunRow.id).where(*running, RunRow.owner != holder)
        lost = set(session.scalars(taken).all())
        session.commit()
    return lost


def release_runs(store: Store, holder: str) -> None:
    """Let go of ``holder``'s running runs (a gateway stopping cleanly): other replicas may
    adopt them at once instead of waiting for the leases to run out."""
    with store.session() as session:
        session.execute(
            update(RunRow)
            .where(RunRow.owner == holder, RunRow.status == "running")
            .values(lease_until=0.0)
        )
        session.commit()


def adoptable_runs(store: Store, holder: str, now: float) -> Sequence[str]:
    """Running runs nobody carries: unclaimed, ``holder``'s own from before a restart, or
    left by a replica whose lease ran out."""
    with store.session() as session:
        return session.scalars(
            select(RunRow.id)
            .where(RunRow.status == "running", _free(holder, now))
            .order_by(RunRow.created_at)
        ).all()


def get_run(store: Store, run_id: str) -> RunRow | None:
    with store.session() as session:
        return session.get(RunRow, run_id)


def run_ids_starting(store: Store, prefix: str, limit: int = 2) -> Sequence[str]:
    """Run ids that start with ``prefix`` (listings show the first 8 characters)."""
    with store.session() as session:
        return session.scalars(
            select(RunRow.id).where(RunRow.id.startswith(prefix, autoescape=True)).limit(limit)
        ).all()


def list_runs(store: Store, limit: int = 50) -> Sequence[RunRow]:
    with store.session() as session:
        return session.scalars(select(RunRow).order_by(RunRow.created_at.desc()).limit(limit)).all()


def add_delegations(store: Store, rows: list[DelegationRow]) -> None:
    with store.session() as session:
        session.add_all(rows)
        session.commit()


def update_delegation(
    store: Store, run_id: str, index: int, holder: str | None = None, **values: Any
) -> bool:
    """Write ``values``; with ``holder``, only while that replica carries the run."""
    query = update(DelegationRow).where(
        DelegationRow.run_id == run_id, DelegationRow.index == index
    )
    return _write(store, query, run_id, holder, values)


def release_interrupted(store: Store, run_id: str, holder: str, reason: str) -> list[int]:
    """Delegations left ``active`` by a replica that stopped go back to ``pending``; their
    indexes are returned. Completed ones are kept as they are: never computed twice."""
    active = (DelegationRow.run_id == run_id, DelegationRow.status == "active")
    with store.session() as session:
        indexes = list(session.scalars(select(DelegationRow.index).where(*active)).all())
        session.execute(
            update(DelegationRow)
            .where(*active, held_by(run_id, holder))
            .values(status="pending", error=reason)
        )
        session.commit()
    return indexes


def delegations(store: Store, run_id: str) -> Sequence[DelegationRow]:
    with store.session() as session:
        return session.scalars(
            select(DelegationRow)
            .where(DelegationRow.run_id == run_id)
            .order_by(DelegationRow.index)
        ).all()
