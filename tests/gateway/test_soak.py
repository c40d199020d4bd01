"""The soak benchmark's machinery, briefly: a real gateway and simulated neurons (each its own
process on loopback) under mixed load, then past their queues. ``benchmarks/soak.py`` runs
the same phases for minutes and prints the figures; here they are asserted on, and so is a
short run of its orchestrated runs (``--runs``).

Nothing is timed: each request may take up to the benchmark's request timeout, and waiting
for the gateway to be idle again has a deadline of a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# Idle before and after, the gateway holds the same connections, give or take each neuron's
# prober connection; its store's pool may hold a few more SQLite connections than after the
# warm-up (at most 5, each the database file and its write-ahead log). A leak grows with the
# requests, hundreds here, far past these margins.
SOCKET_MARGIN = 3
FD_MARGIN = 8


def test_a_short_soak_loses_nothing_leaks_nothing_and_saturation_says_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import soak
    from _fleet import Fleet

    with Fleet(tmp_path) as fleet:
        options = soak.Options(5.0, clients=6, warmup_s=2.0, max_queue=2, saturation_tokens=48)
        report = soak.soak(fleet, options)
    print(soak.text(report))  # shown when the test fails

    assert report.completed > 0
    assert report.lost == 0, report.details
    assert report.errors == 0, report.details  # no 5xx but 503 with Retry-After

    saturation = report.saturation
    assert saturation.clients == 3 * report.capacity
    assert saturation.busy_at_once > 0  # beyond the queues: 503 with Retry-After, not a hang
    assert saturation.answered == saturation.clients  # waiting as told gets the answer
    assert (saturation.lost, saturation.errors) == (0, 0), saturation.details

    warm = report.warm
    for idle in (report.after, report.drained):  # after the steady load, after saturation
        assert (idle.inbound, idle.close_wait) == (0, 0), idle  # every connection closed
        assert idle.sockets <= warm.sockets + SOCKET_MARGIN, (warm, idle)
        assert idle.fds <= warm.fds + FD_MARGIN, (warm, idle)


def test_a_short_runs_soak_completes_every_run_followed_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _soak_runs
    from _fleet import Fleet

    with Fleet(tmp_path) as fleet:
        options = _soak_runs.RunsOptions(runs=16, warmup=8, clients=4)
        report = _soak_runs.soak(fleet, options)
    print(_soak_runs.text(report))  # shown when the test fails

    assert report.statuses == {"completed": 16}  # stitched and direct, followed and polled
    assert report.samples
    assert report.warm.rss_mib > 0
    assert report.after.inbound == 0  # every follower's stream closed
