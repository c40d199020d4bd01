"""Q||Cmax scheduling: the lower bound, and the speed policy never worse than the fastest
neuron alone, checked on the seed-like fleet and on random ones."""

from __future__ import annotations

import random

import pytest

from ganglion.orchestra.schedule import lower_bound, schedule, workers

SEED_FLEET = {"gpu": 90.0, "cpu": 13.0, "quadro": 5.8, "old": 5.5}


def test_lower_bound_is_the_larger_of_total_and_prefix_bounds() -> None:
    assert lower_bound([100, 100], [100, 100]) == 1.0
    # one huge job: it cannot go faster than the fastest machine
    assert lower_bound([900, 10, 10], [90, 10]) == 10.0
    assert lower_bound([], [1]) == 0.0


def test_speed_policy_keeps_slow_neurons_out_when_they_would_slow_the_run() -> None:
    sizes = [200, 180, 160, 150]
    plan = schedule(sizes, workers(SEED_FLEET), "speed")
    alone = sum(sizes) / SEED_FLEET["gpu"]
    assert plan.predicted_s <= alone + 1e-9
    assert {p.neuron for p in plan.placements} == {"gpu"}
    assert plan.lower_bound_s <= plan.predicted_s


def test_round_robin_on_the_seed_fleet_is_far_slower() -> None:
    sizes = [200, 180, 160, 150]
    rr = schedule(sizes, workers(SEED_FLEET), "round-robin")
    speed = schedule(sizes, workers(SEED_FLEET), "speed")
    assert rr.predicted_s > 3 * speed.predicted_s  # 27.6 s against 7.7 s
    assert {p.neuron for p in rr.placements} == set(SEED_FLEET)


def test_equal_neurons_share_the_work() -> None:
    plan = schedule([100] * 8, workers({f"n{i}": 20.0 for i in range(4)}), "speed")
    assert plan.predicted_s == pytest.approx(10.0)
    assert plan.lower_bound_s == pytest.approx(10.0)
    assert {len(plan.on(f"n{i}")) for i in range(4)} == {2}


def test_slots_are_extra_workers_and_fastest_uses_one_neuron() -> None:
    pool = workers({"wide": 20.0, "solo": 30.0}, slots={"wide": 3})
    assert len(pool) == 4
    fastest = schedule([60, 60, 60], pool, "fastest")
    assert {p.neuron for p in fastest.placements} == {"solo"}
    assert fastest.predicted_s == pytest.approx(6.0)


@pytest.mark.parametrize("seed", range(200))
def test_never_worse_than_the_fastest_alone_and_never_below_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    speeds = {
        f"n{i}": rng.choice([90, 45, 20, 13, 5.8, 5.5, 2.0]) for i in range(rng.randint(1, 6))
    }
    sizes = [rng.randint(10, 600) for _ in range(rng.randint(1, 12))]
    plan = schedule(sizes, workers(speeds), "speed")
    assert plan.predicted_s <= sum(sizes) / max(speeds.values()) + 1e-9
    assert plan.lower_bound_s <= plan.predicted_s + 1e-9
    assert sorted(p.index for p in plan.placements) == list(range(len(sizes)))
