"""The store: SQLAlchemy schema, Alembic migrations, and the queries the fleet needs."""

from ganglion.store.db import create_store_engine, migrate
from ganglion.store.queries import SpeedSample, Store

__all__ = ["SpeedSample", "Store", "create_store_engine", "migrate"]
