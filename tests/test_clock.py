"""Wall-clock stamps are aware and UTC, including the naive ones SQLite hands back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from ganglion.clock import aware, utcnow


def test_utcnow_is_aware_utc() -> None:
    assert utcnow().tzinfo is UTC


def test_a_naive_stamp_is_read_as_utc_and_an_aware_one_is_kept() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert aware(naive) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    paris = datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert aware(paris) is paris
