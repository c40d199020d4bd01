"""The queries the orchestrator needs: runs and their delegations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update

from ganglion.store.queries import Store
from ganglion.store.schema import DelegationRow, RunRow


def add_run(store: Store, row: RunRow) -> None:
    with store.session() as session:
        session.add(row)
        session.commit()


def update_run(store: Store, run_id: str, **values: Any) -> None:
    with store.session() as session:
        session.execute(update(RunRow).where(RunRow.id == run_id).values(**values))
        session.commit()


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


def unfinished_runs(store: Store) -> Sequence[RunRow]:
    with store.session() as session:
        return session.scalars(select(RunRow).where(RunRow.status == "running")).all()


def add_delegations(store: Store, rows: list[DelegationRow]) -> None:
    with store.session() as session:
        session.add_all(rows)
        session.commit()


def update_delegation(store: Store, run_id: str, index: int, **values: Any) -> None:
    with store.session() as session:
        session.execute(
            update(DelegationRow)
            .where(DelegationRow.run_id == run_id, DelegationRow.index == index)
            .values(**values)
        )
        session.commit()


def delegations(store: Store, run_id: str) -> Sequence[DelegationRow]:
    with store.session() as session:
        return session.scalars(
            select(DelegationRow)
            .where(DelegationRow.run_id == run_id)
            .order_by(DelegationRow.index)
        ).all()
