"""Opening the database and applying migrations. SQLite by default; PostgreSQL by URL."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ganglion.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"


def create_store_engine(url: str) -> Engine:
    """An engine for ``url`` (already normalised by :mod:`ganglion.config`).

    For SQLite the parent folder is created and foreign keys are switched on.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _alembic() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema (``alembic upgrade head``)."""
    config = _alembic()
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StoreError(
            f"cannot open the database {where}: {reason}. Check that it is running and the "
            "URL (--db or GANGLION_DATABASE_URL) is right"
        ) from None
    except SQLAlchemyError as error:
        raise StoreError(f"cannot migrate the database {where}: {error}") from None


@cache
def newest_revision() -> str | None:
    """The newest migration this release has (read from its scripts once)."""
    return ScriptDirectory.from_config(_alembic()).get_current_head()


def schema_revisions(engine: Engine) -> tuple[str | None, str | None]:
    """``(current, head)``: the migration the database is at (``None`` before the first) and
    the newest this release has. Reads only. Raises :class:`StoreError` when the database
    does not answer."""
    head = newest_revision()
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as error:
        orig = getattr(error, "orig", None)
        reason = str(orig or error).strip().splitlines()[0]
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"the database {where} does not answer: {reason}") from None
    return current, head


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())
