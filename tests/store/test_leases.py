"""Run leases on both stores: one replica carries a run at a time, decided by the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ganglion.store import Store
from ganglion.store import runs as records
from ganglion.store.schema import DelegationRow, RunRow


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[Store, Store]]:
    """Two replicas' connections to one database."""
    a, b = Store.open(store_url), Store.open(store_url)
    yield a, b
    a.close()
    b.close()


def add(store: Store, run_id: str, owner: str | None = None, until: float | None = None) -> None:
    records.add_run(
        store,
        RunRow(id=run_id, task="t", status="running", owner=owner, lease_until=until),
    )
    records.add_delegations(
        store,
        [
            DelegationRow(run_id=run_id, index=i, subtask=f"part {i}", status="pending")
            for i in (0, 1)
        ],
    )


def test_a_held_lease_keeps_other_replicas_out_until_it_runs_out(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    now = time.time()
    add(a, "r1", owner="a", until=now + 30)
    assert not records.claim_run(b, "r1", "b", now, now + 30)
    assert records.adoptable_runs(b, "b", now) == []
    assert records.adoptable_runs(a, "a", now) == ["r1"]  # a restarted replica takes it back
    later = now + 31
    assert records.adoptable_runs(b, "b", later) == ["r1"]
    assert records.claim_run(b, "r1", "b", later, later + 30)
    # the old carrier's writes no longer land, and it learns it lost the run
    assert not records.update_delegation(a, "r1", 0, "a", status="completed", output="late")
    assert not records.update_run(a, "r1", "a", status="completed", answer="late")
    assert records.renew_leases(a, "a", ["r1"], later + 60) == {"r1"}  # taken by b
    assert records.update_delegation(b, "r1", 0, "b", status="completed", output="on time")
    assert records.renew_leases(b, "b", ["r1"], later + 60) == set()  # still b's
    row = records.get_run(a, "r1")
    assert row is not None
    assert (row.owner, row.status, row.answer) == ("b", "running", None)
    assert [d.output for d in records.delegations(a, "r1")] == ["on time", None]
    assert records.update_run(b, "r1", "b", status="completed")
    assert records.renew_leases(b, "b", ["r1"], later + 60) == set()  # ended here: not taken


def test_interrupted_delegations_go_back_to_pending_and_completed_ones_stay(
    stores: tuple[Store, Store],
) -> None:
    a, _ = stores
    add(a, "r1", owner="a", until=time.time() + 30)
    assert records.update_delegation(a, "r1", 0, "a", status="completed", output="kept")
    assert records.update_delegation(a, "r1", 1, "a", status="active")
    assert records.release_interrupted(a, "r1", "a", "interrupted") == [1]
    done, back = records.delegations(a, "r1")
    assert (done.status, done.output) == ("completed", "kept")
    assert (back.status, back.error) == ("pending", "interrupted")


def test_a_cancelled_run_refuses_its_carriers_writes(stores: tuple[Store, Store]) -> None:
    a, b = stores
    add(a, "r1", owner="a", until=time.time() + 30)
    assert records.update_run(b, "r1", status="failed", reason="cancelled by the operator")
    assert not records.update_run(a, "r1", "a", status="completed", answer="too late")
    assert not records.claim_run(a, "r1", "a", time.time(), time.time() + 30)


def test_replicas_racing_for_the_same_runs_each_get_a_run_exactly_once(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    ids = [f"r{n}" for n in range(20)]
    for run_id in ids:
        add(a, run_id)  # unclaimed, as a crashed gateway's runs look once their leases ran out
    won: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def race(store: Store, name: str) -> None:
        start.wait()
        for run_id in records.adoptable_runs(store, name, time.time()):
            if records.claim_run(store, run_id, name, time.time(), time.time() + 30):
                won[name].append(run_id)

    threads = [threading.Thread(target=race, args=pair) for pair in ((a, "a"), (b, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won["a"] + won["b"]) == sorted(ids)
    assert not set(won["a"]) & set(won["b"])
    owners = {run_id: records.get_run(a, run_id).owner for run_id in ids}  # type: ignore[union-attr]
    assert all(owners[run_id] == "a" for run_id in won["a"])
    assert all(owners[run_id] == "b" for run_id in won["b"])


def test_a_gateway_stopping_cleanly_lets_its_runs_go_at_once(stores: tuple[Store, Store]) -> None:
    a, b = stores
    now = time.time()
    add(a, "r1", owner="a", until=now + 30)
    records.release_runs(a, "a")
    assert records.adoptable_runs(b, "b", now) == ["r1"]
    assert records.claim_run(b, "r1", "b", now, now + 30)
