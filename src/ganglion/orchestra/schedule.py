"""Placing subtasks on neurons of different speeds: Q||Cmax, uniform machines.

Subtask j has an expected size p_j (output tokens); worker i decodes at s_i tok/s. A neuron
with k slots counts as k workers of its per-stream speed. The lower bound on the parallel
phase (DESIGN.md)::

    LB = max( Σp / Σs ,  max_k  Σ_{j≤k} p_(j) / Σ_{i≤k} s_(i) )     both sorted descending

The ``speed`` policy is LPT by earliest finish: largest subtask first, to the worker where it
finishes first, argmin_i (L_i + p_j) / s_i. A slow worker gets work only when it finishes it
sooner than the fast one would, so the makespan never exceeds Σp / s_max, the fastest worker
doing everything alone. ``round-robin`` and ``fastest`` exist to compare against. These
schedule policies live in :data:`SCHEDULE_POLICIES`; which neuron serves a single request is
a routing policy (:mod:`ganglion.routing`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Worker:
    """One slot of one neuron."""

    neuron: str
    slot: int
    tokens_per_second: float


@dataclass(frozen=True)
class Placement:
    index: int
    neuron: str
    slot: int
    start_s: float
    finish_s: float


@dataclass(frozen=True)
class Schedule:
    policy: str
    placements: list[Placement]
    lower_bound_s: float
    predicted_s: float

    def on(self, neuron: str) -> list[Placement]:
        return [p for p in self.placements if p.neuron == neuron]


def workers(speeds: dict[str, float], slots: dict[str, int] | None = None) -> list[Worker]:
    """Each neuron's slots as workers, fastest first."""
    made = [
        Worker(name, slot, tps)
        for name, tps in speeds.items()
        if tps > 0
        for slot in range((slots or {}).get(name, 1))
    ]
    return sorted(made, key=lambda w: (-w.tokens_per_second, w.neuron, w.slot))


def lower_bound(sizes: Sequence[float], speeds: Sequence[float]) -> float:
    """LB for sizes ``p`` on machines of speeds ``s`` (any order)."""
    if not sizes or not speeds:
        return 0.0
    p = sorted(sizes, reverse=True)
    s = sorted(speeds, reverse=True)
    bound = sum(p) / sum(s)
    done = fast = 0.0
    for k in range(min(len(p), len(s)) - 1):
        done += p[k]
        fast += s[k]
        bound = max(bound, done / fast)
    return bound


@dataclass
class _Lane:
    worker: Worker
    load_s: float = 0.0
    jobs: list[Placement] = field(default_factory=list)

    def put(self, index: int, size: float) -> Placement:
        start = self.load_s
        self.load_s += size / self.worker.tokens_per_second
        placed = Placement(index, self.worker.neuron, self.worker.slot, start, self.load_s)
        self.jobs.append(placed)
        return placed

    def finish_if(self, size: float) -> float:
        return self.load_s + size / self.worker.tokens_per_second


class SchedulePolicy(Protocol):
    """How a plan's subtasks are placed on the workers (``policy`` of a run)."""

    name: str

    def place(self, sizes: Sequence[float], lanes: list[_Lane]) -> None: ...


class Speed:
    """Largest first, each to the worker where it finishes earliest (LPT, Q||Cmax)."""

    name = "speed"

    def place(self, sizes: Sequence[float], lanes: list[_Lane]) -> None:
        for index in sorted(range(len(sizes)), key=lambda j: -sizes[j]):
            best = min(lanes, key=lambda lane: (lane.finish_if(sizes[index]), lane.worker.neuron))
            best.put(index, sizes[index])


class RoundRobin:
    """Subtask j to worker j mod n, whatever the speeds."""

    name = "round-robin"

    def place(self, sizes: Sequence[float], lanes: list[_Lane]) -> None:
        by_neuron = sorted(lanes, key=lambda lane: (lane.worker.slot, lane.worker.neuron))
        for index, size in enumerate(sizes):
            by_neuron[index % len(by_neuron)].put(index, size)


class Fastest:
    """Everything on the fastest neuron (its slots shared earliest-finish)."""

    name = "fastest"

    def place(self, sizes: Sequence[float], lanes: list[_Lane]) -> None:
        top = lanes[0].worker.neuron
        Speed().place(sizes, [lane for lane in lanes if lane.worker.neuron == top])


SCHEDULE_POLICIES: dict[str, Callable[[], SchedulePolicy]] = {}


def register_schedule_policy(name: str, factory: Callable[[], SchedulePolicy]) -> None:
    SCHEDULE_POLICIES[name] = factory


for _policy in (Speed, RoundRobin, Fastest):
    register_schedule_policy(_policy.name, _policy)


def schedule(sizes: Sequence[float], pool: Sequence[Worker], policy: str = "speed") -> Schedule:
    """Place ``sizes`` on ``pool`` with ``policy``; the prediction and the lower bound."""
    if not pool:
        raise ValueError("no workers to schedule on")
    lanes = [_Lane(worker) for worker in sorted(pool, key=lambda w: -w.tokens_per_second)]
    SCHEDULE_POLICIES[policy]().place(sizes, lanes)
    placements = sorted((p for lane in lanes for p in lane.jobs), key=lambda p: p.index)
    return Schedule(
        policy=policy,
        placements=placements,
        lower_bound_s=lower_bound(sizes, [w.tokens_per_second for w in pool]),
        predicted_s=max((lane.load_s for lane in lanes), default=0.0),
    )


# --- parts sized to speed: divisible work, released as the plan streams ------------------


@dataclass(frozen=True)
class Share:
    """One part's budget on one worker: it starts when its plan entry arrives (or when the
    worker is free, if later) and is sized to end at the common finish."""

    index: int
    neuron: str
    slot: int
    tokens: int
    start_s: float
    finish_s: float


@dataclass(frozen=True)
class Sizing:
    shares: list[Share]
    finish_s: float  # when every part is predicted done, from the plan's start

    @property
    def first_start_s(self) -> float:
        return min((s.start_s for s in self.shares), default=0.0)


def size_parts(
    total: float,
    pool: Sequence[Worker],
    arrivals: Sequence[float],
    free_at: dict[str, float] | None = None,
    min_tokens: int = 32,
    delay: dict[str, float] | None = None,
) -> Sizing:
    """Split ``total`` tokens into parts that all finish together (Q|pmtn|Cmax with release
    times). Part j's plan entry arrives at ``arrivals[j]``; ``free_at`` says when a busy
    neuron (the one writing the opening) can start, ``delay`` how long a neuron takes to
    read the part's prompt before its first token. The fastest workers take the earliest
    entries; a part of worker i gets s_i (F - start_i) tokens, where F is the smallest common
    finish over every count of parts whose shares all reach ``min_tokens``. A worker too slow
    to finish ``min_tokens`` before the others are done gets nothing."""
    if not pool or not arrivals:
        raise ValueError("no workers or no plan entries to size parts for")
    busy = free_at or {}
    reading = delay or {}
    lanes = sorted(pool, key=lambda w: (-w.tokens_per_second, w.neuron, w.slot))
    best: Sizing | None = None
    for count in range(1, min(len(lanes), len(arrivals)) + 1):
        chosen = lanes[:count]
        # the earliest entries to the workers free soonest, the fastest first among equals
        order = sorted(chosen, key=lambda w: (busy.get(w.neuron, 0.0), -w.tokens_per_second))
        starts = [
            max(arrivals[j], busy.get(w.neuron, 0.0)) + reading.get(w.neuron, 0.0)
            for j, w in enumerate(order)
        ]
        speed = sum(w.tokens_per_second for w in order)
        finish = (
            total + sum(w.tokens_per_second * s for w, s in zip(order, starts, strict=True))
        ) / speed
        shares = [
            Share(j, w.neuron, w.slot, round(w.tokens_per_second * (finish - s)), s, finish)
            for j, (w, s) in enumerate(zip(order, starts, strict=True))
        ]
        if all(share.tokens >= min_tokens for share in shares) and (
            best is None or finish < best.finish_s
        ):
            best = Sizing(shares, finish)
    if best is None:  # not even one part reaches min_tokens: the fastest does it all
        worker = lanes[0]
        start = max(arrivals[0], busy.get(worker.neuron, 0.0)) + reading.get(worker.neuron, 0.0)
        finish = start + total / worker.tokens_per_second
        best = Sizing([Share(0, worker.neuron, worker.slot, round(total), start, finish)], finish)
    return best
