"""The queries the fleet needs, in one place. Synchronous; the gateway calls them off-loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Update

from ganglion.clock import utcnow
from ganglion.errors import DuplicateNeuron, UnknownApiKey, UnknownNeuron
from ganglion.neurons.base import TokenStats
from ganglion.store.db import create_store_engine, migrate
from ganglion.store.schema import ApiKeyRow, Base, NeuronRow, NodeReportRow, SpeedSampleRow

KEEP_SAMPLES = 1000
ID_PARAM = "neuron_id_"  # the id's parameter in a batch of updates (not a column's name)
#: The store cuts histories back each time this many more samples are written (at a
#: thousand requests a second, once a second; each cut costs as much as writing the samples).
PRUNE_EVERY = 1000


@dataclass(frozen=True)
class SpeedSample:
    """One request's cost on a neuron, as the store keeps it."""

    neuron_id: int
    model: str
    source: str
    stats: TokenStats
    predicted_cached_tokens: int | None = None
    """The prompt tokens the router predicted the neuron to hold in its KV cache."""


SAMPLE_COLUMNS = (
    "neuron_id",
    "model",
    "source",
    "prompt_tokens",
    "cached_tokens",
    "predicted_cached_tokens",
    "output_tokens",
    "prefill_s",
    "decode_s",
    "load_s",
    "ttft_s",
    "wall_s",
    "tokens_per_second",
    "created_at",
)
"""The columns a speed sample's row fills, in the order of :func:`_sample_row`."""


def _sample_row(sample: SpeedSample, stamp: object) -> tuple[object, ...]:
    stats = sample.stats
    return (
        sample.neuron_id,
        sample.model,
        sample.source,
        stats.prompt_tokens,
        stats.cached_tokens,
        sample.predicted_cached_tokens,
        stats.output_tokens,
        stats.prefill_s,
        stats.decode_s,
        stats.load_s,
        stats.ttft_s,
        stats.wall_s,
        stats.decode_tps,
        stamp,
    )


class SampleInsert:
    """The insert of speed samples, compiled once for a dialect and run through the driver's
    own ``executemany``: ``Connection.execute`` builds and processes each row's parameters in
    Python, which cost more than the rest of a flush together.

    Rows go as tuples in :data:`SAMPLE_COLUMNS` order to a driver with positional parameters
    (SQLite's ``?``), as mappings to one with named ones (psycopg's ``%(name)s``). Of the
    columns, only the timestamp needs the dialect's conversion (SQLite stores it as text):
    :meth:`stamp` does it once a flush."""

    def __init__(self, dialect: Dialect) -> None:
        compiled = insert(SpeedSampleRow).compile(
            dialect=dialect, column_keys=list(SAMPLE_COLUMNS), for_executemany=True
        )
        bound = tuple(compiled.positiontup or ()) if compiled.positional else None
        if bound is not None and bound != SAMPLE_COLUMNS:
            raise RuntimeError(f"speed_samples binds {bound}, not SAMPLE_COLUMNS")
        self.sql = str(compiled)
        self._named = bound is None
        created_at = SpeedSampleRow.__table__.c.created_at.type.dialect_impl(dialect)
        self._convert: Callable[[Any], Any] | None = created_at.bind_processor(dialect)

    def stamp(self, when: datetime) -> object:
        """``when`` as the driver takes it for ``created_at``."""
        return when if self._convert is None else self._convert(when)

    def run(self, connection: Connection, rows: list[tuple[object, ...]]) -> None:
        if self._named:
            named = [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in rows]
            connection.exec_driver_sql(self.sql, named)
        else:
            connection.exec_driver_sql(self.sql, rows)


_KNOWN_NEURONS = select(NeuronRow.id).where(NeuronRow.id.in_(bindparam("ids", expanding=True)))
_NEWEST_SAMPLE = select(func.max(SpeedSampleRow.id))
_OLDEST_KEPT = (
    select(SpeedSampleRow.id)
    .where(SpeedSampleRow.neuron_id == bindparam("neuron"))
    .order_by(SpeedSampleRow.id.desc())
    .offset(bindparam("skip"))
    .limit(1)
    .scalar_subquery()
)
_PRUNE = delete(SpeedSampleRow).where(
    SpeedSampleRow.neuron_id == bindparam("neuron"), SpeedSampleRow.id < _OLDEST_KEPT
)
"""Cut a neuron's history back to its newest ``skip + 1`` samples (none cut when it has
fewer: the comparison with no row is never true)."""


@lru_cache(maxsize=64)  # one per set of columns updated together: a handful in practice
def _update_statement(columns: tuple[str, ...]) -> Update:
    return (
        update(NeuronRow)
        .where(NeuronRow.id == bindparam(ID_PARAM))
        .values({column: bindparam(column) for column in columns})
    )


class NeuronMark(NamedTuple):
    id: int
    name: str
    suspended: bool


class Store:
    """The record of the fleet. Open with :meth:`open`, which migrates to the newest schema."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._sample_insert = SampleInsert(engine.dialect)

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
        :data:`KEEP_SAMPLES`, so a busy gateway's store stays small. The samples of one
        write are stamped with one time, the write's.

        This runs every tenth of a second under load, so its statements are built once and
        the samples go through the driver's ``executemany`` (:class:`SampleInsert`): the ORM's
        unit of work cost ten times what Core's ``execute`` did, and that three times this
        (about 45 and 15 µs of CPU a sample on SQLite, most of the 15 SQLite's own work)."""
        alike: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for neuron_id, values in updates.items():
            if values:
                alike.setdefault(tuple(sorted(values)), []).append({**values, ID_PARAM: neuron_id})
        if not samples and not alike:
            return 0
        with self.engine.begin() as connection:
            for columns, changes in alike.items():
                connection.execute(_update_statement(columns), changes)
            wanted = {sample.neuron_id for sample in samples}
            known = set(connection.scalars(_KNOWN_NEURONS, {"ids": list(wanted)}))
            stamp = self._sample_insert.stamp(utcnow())
            rows = [_sample_row(sample, stamp) for sample in samples if sample.neuron_id in known]
            if not rows:
                return 0
            self._sample_insert.run(connection, rows)
            newest = connection.scalar(_NEWEST_SAMPLE) or 0
            if newest // PRUNE_EVERY != (newest - len(rows)) // PRUNE_EVERY:
                skip = KEEP_SAMPLES - 1
                connection.execute(_PRUNE, [{"neuron": n, "skip": skip} for n in sorted(known)])
        return len(rows)

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
        """Revoke the key (a gateway refuses it once it reads the key again: within its
        ``key_recheck_s``). Idempotent."""
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
