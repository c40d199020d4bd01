"""Wall-clock time, always in UTC.

The store writes UTC; SQLite hands its datetimes back naive, so every stamp read from the
store goes through :func:`aware` before it is compared or shown.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(stamp: datetime) -> datetime:
    """``stamp`` as an aware UTC datetime (a naive one, as SQLite returns, is UTC)."""
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
