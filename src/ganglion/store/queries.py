"""The queries the fleet needs, in one place. Synchronous; the gateway calls them off-loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ganglion.clock import utcnow
from ganglion.errors import DuplicateNeuron, UnknownApiKey, UnknownNeuron
from ganglion.neurons.base import TokenStats
from ganglion.store.db import create_store_engine, migrate
from ganglion.store.schema import ApiKeyRow, Base, NeuronRow, NodeReportRow, SpeedSampleRow

KEEP_SAMPLES = 1000
ID_PARAM = "neuron_id_"  # the id's parameter in a batch of updates (not a column's name)
PRUNE_EVERY = 100


@dataclass(frozen=True)
class SpeedSample:
    """One request's cost on a neuron, as the store keeps it."""

    neuron_id: int
    model: str
    source: str
    stats: TokenStats
    predicted_cached_tokens: int | None = None
    """The prompt tokens the router predicted the neuron to hold in its KV cache."""


def _sample_values(sample: SpeedSample) -> dict[str, Any]:
    stats = sample.stats
    return {
        "neuron_id": sample.neuron_id,
        "model": sample.model,
        "source": sample.source,
        "prompt_tokens": stats.prompt_tokens,
        "cached_tokens": stats.cached_tokens,
        "predicted_cached_tokens": sample.predicted_cached_tokens,
        "output_tokens": stats.output_tokens,
        "prefill_s": stats.prefill_s,
        "decode_s": stats.decode_s,
        "load_s": stats.load_s,
        "ttft_s": stats.ttft_s,
        "wall_s": stats.wall_s,
        "tokens_per_second": stats.decode_tps,
        "created_at": utcnow(),
    }


class NeuronMark(NamedTuple):
    id: int
    name: str
    suspended: bool


class Store:
    """The record of the fleet. Open with :meth:`open`, which migrates to the newest schema."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> Store:
        engine = create_store_engine(url)
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._sessions()

    # neurons

    def _insert(self, row: Base) -> bool:
        """Add ``row``; False when a unique column already holds its value."""
        with self.session() as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
            return True

    def add_neuron(self, row: NeuronRow) -> NeuronRow:
        if not self._insert(row):
            raise DuplicateNeuron(
                f"a neuron named {row.name!r} or at {row.url} is already registered: "
                "choose another --name, or remove it first (ganglion neuron rm NAME)"
            )
        return row

    def neurons(self) -> Sequence[NeuronRow]:
        with self.session() as session:
            return session.scalars(select(NeuronRow).order_by(NeuronRow.id)).all()

    def neuron_marks(self) -> list[NeuronMark]:
        """Each neuron's id, name and suspension: what a replica checks every probe round,
        read without building a thousand rows."""
        query = select(NeuronRow.id, NeuronRow.name, NeuronRow.suspended).order_by(NeuronRow.id)
        with self.session() as session:
            return [NeuronMark(*mark) for mark in session.execute(query)]

    def remove_neuron(self, name: str) -> None:
        with self.session() as session:
            deleted = session.execute(delete(NeuronRow).where(NeuronRow.name == name))
            session.commit()
        if getattr(deleted, "rowcount", 0) == 0:
            raise UnknownNeuron(f"no neuron named {name!r}: see ganglion neuron list")

    def update_neuron(self, name: str, **values: Any) -> None:
        with self.session() as session:
            session.execute(update(NeuronRow).where(NeuronRow.name == name).values(**values))
            session.commit()

    # nodes

    def set_node_report(self, row: NodeReportRow) -> None:
        """Keep ``row`` as its node's report, in place of the one before."""
        with self.session() as session:
            session.merge(row)
            session.commit()

    def node_reports(self) -> Sequence[NodeReportRow]:
        with self.session() as session:
            return session.scalars(select(NodeReportRow).order_by(NodeReportRow.node)).all()

    # speed samples

    def add_sample(self, neuron_id: int, model: str, source: str, stats: TokenStats) -> None:
        """Record one request's cost (see :meth:`add_samples`)."""
        self.add_samples([SpeedSample(neuron_id, model, source, stats)])

    def add_samples(self, samples: Sequence[SpeedSample]) -> int:
        """Record many requests' costs in one transaction; the count written (see
        :meth:`write_behind`)."""
        return self.write_behind(samples, {})

    def write_behind(
        self, samples: Sequence[SpeedSample], updates: Mapping[int, Mapping[str, object]]
    ) -> int:
        """Neuron updates by id, then samples, in one transaction; the count of samples
        written. A neuron removed meanwhile is skipped. The updates that set the same columns
        go as one statement with many parameter sets (a thousand neurons' last-seen times: one
        round of the driver, not a thousand). Whenever the samples' ids pass a multiple of
        :data:`PRUNE_EVERY`, the history of each neuron in the batch is cut back to its newest
        :data:`KEEP_SAMPLES`, so a busy gateway's store stays small.

        This runs every tenth of a second under load, so it is SQLAlchemy Core, one
        ``executemany`` for the samples: the ORM's unit of work cost ten times as much."""
        alike: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for neuron_id, values in updates.items():
            if values:
                alike.setdefault(tuple(sorted(values)), []).append({**values, ID_PARAM: neuron_id})
        if not samples and not alike:
            return 0
        with self.engine.begin() as connection:
            for columns, changes in alike.items():
                statement = (
                    update(NeuronRow)
                    .where(NeuronRow.id == bindparam(ID_PARAM))
                    .values({column: bindparam(column) for column in columns})
                )
                connection.execute(statement, changes)
            wanted = {sample.neuron_id for sample in samples}
            known = set(connection.scalars(select(NeuronRow.id).where(NeuronRow.id.in_(wanted))))
            rows = [_sample_values(sample) for sample in samples if sample.neuron_id in known]
            if not rows:
                return 0
            connection.execute(insert(SpeedSampleRow), rows)
            newest = connection.scalar(select(func.max(SpeedSampleRow.id))) or 0
            if newest // PRUNE_EVERY != (newest - len(rows)) // PRUNE_EVERY:
                for neuron_id in {row["neuron_id"] for row in rows}:
                    self._prune_samples(connection, neuron_id)
        return len(rows)

    @staticmethod
    def _prune_samples(connection: Connection, neuron_id: int) -> None:
        oldest_kept = connection.scalar(
            select(SpeedSampleRow.id)
            .where(SpeedSampleRow.neuron_id == neuron_id)
            .order_by(SpeedSampleRow.id.desc())
            .offset(KEEP_SAMPLES - 1)
            .limit(1)
        )
        if oldest_kept is not None:
            connection.execute(
                delete(SpeedSampleRow).where(
                    SpeedSampleRow.neuron_id == neuron_id, SpeedSampleRow.id < oldest_kept
                )
            )

    def samples(self, neuron_id: int, limit: int = 50) -> Sequence[SpeedSampleRow]:
        """The newest ``limit`` samples of a neuron, oldest first."""
        with self.session() as session:
            newest = session.scalars(
                select(SpeedSampleRow)
                .where(SpeedSampleRow.neuron_id == neuron_id)
                .order_by(SpeedSampleRow.id.desc())
                .limit(limit)
            ).all()
        return list(reversed(newest))

    # API keys (only hashes: see ganglion.gateway.auth)

    def add_api_key(self, row: ApiKeyRow) -> ApiKeyRow | None:
        """Store a new key; ``None`` when its prefix is already taken (draw another)."""
        return row if self._insert(row) else None

    def api_key(self, prefix: str) -> ApiKeyRow | None:
        with self.session() as session:
            return session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).first()

    def api_keys(self) -> Sequence[ApiKeyRow]:
        with self.session() as session:
            return session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)).all()

    def revoke_api_key(self, prefix: str) -> ApiKeyRow:
        """Revoke the key (at once: the gateway looks keys up on every request). Idempotent."""
        with self.session() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).first()
            if row is None:
                raise UnknownApiKey(f"no API key with prefix {prefix!r}: see ganglion keys list")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.commit()
            return row

    def count_active_keys(self, role: str) -> int:
        """Keys of ``role`` that are not revoked."""
        with self.session() as session:
            query = select(func.count()).where(
                ApiKeyRow.role == role, ApiKeyRow.revoked_at.is_(None)
            )
            return int(session.scalar(query) or 0)
