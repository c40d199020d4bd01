"""Neuron liveness, classified from evidence. A neuron is operational unless shown otherwise.

A neuron's status is never a job's outcome: a failed request counts as an error against it,
but only failing *probes* make it ``offline``, and a request that completed is proof of life.
Hysteresis: ``offline`` needs several probe failures in a row, and coming back needs as many
successes as :attr:`Thresholds.online_after_successes`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class NeuronStatus(StrEnum):
    ACTIVE = "active"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    SUSPENDED = "suspended"


DOWN = frozenset({NeuronStatus.OFFLINE, NeuronStatus.SUSPENDED})


def is_active(status: NeuronStatus) -> bool:
    """True unless the neuron is down (offline) or taken out by the operator (suspended)."""
    return status not in DOWN


@dataclass(frozen=True)
class Thresholds:
    offline_after_failures: int = 2
    online_after_successes: int = 1
    degraded_speed_ratio: float = 0.5
    degraded_error_count: int = 3
    error_window_s: float = 120.0

    def too_slow(self, speed: float | None, baseline: float | None) -> bool:
        """Whether decoding at ``speed`` is too far below the ``baseline`` (either unknown:
        not too slow)."""
        if speed is None or not baseline:
            return False
        return speed < self.degraded_speed_ratio * baseline


@dataclass
class Health:
    """The evidence about one neuron's liveness, updated by probes and by real requests."""

    suspended: bool = False
    offline: bool = False
    probe_failures: int = 0
    probe_successes: int = 0
    last_failure: str | None = None
    errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=50))
    answered_at: float | None = None  # when real traffic last completed (monotonic clock)
    probed_at: float | None = None  # when a probe last ended, either way (monotonic clock)

    def probe_failed(self, reason: str, limits: Thresholds) -> None:
        self.probe_failures += 1
        self.probe_successes = 0
        self.last_failure = reason
        if self.probe_failures >= limits.offline_after_failures:
            self.offline = True

    def probe_succeeded(self, limits: Thresholds) -> None:
        self.probe_successes += 1
        self.probe_failures = 0
        if self.probe_successes >= limits.online_after_successes:
            self.offline = False

    def request_completed(self, now: float | None = None) -> None:
        """A completed request is proof of life: the neuron is not offline."""
        self.probe_failures = 0
        self.offline = False
        self.answered_at = now

    def request_failed(self, now: float, reason: str) -> None:
        self.errors.append((now, reason))

    def recent_errors(self, now: float, window_s: float) -> list[str]:
        if not self.errors:  # the usual case, asked after every request
            return []
        return [reason for when, reason in self.errors if now - when <= window_s]


def classify(
    health: Health,
    *,
    now: float,
    speed: float | None,
    baseline: float | None,
    limits: Thresholds,
    idle_gpu: str | None = None,
) -> tuple[NeuronStatus, str | None]:
    """The status and the reason for it (``None`` only when ``active``). ``idle_gpu`` says why
    the node's GPU contributes nothing to the neuron (:mod:`ganglion.fleet.placement`): it
    runs, slowly, on the CPU."""
    if health.suspended:
        return NeuronStatus.SUSPENDED, "suspended by the operator (ganglion neuron resume NAME)"
    if health.offline:
        return NeuronStatus.OFFLINE, (
            f"{health.probe_failures or limits.offline_after_failures} probes failed in a row: "
            f"{health.last_failure}"
        )
    errors = health.recent_errors(now, limits.error_window_s)
    if len(errors) >= limits.degraded_error_count:
        return NeuronStatus.DEGRADED, (
            f"{len(errors)} failed requests in the last {limits.error_window_s:.0f} s; "
            f"last: {errors[-1]}"
        )
    if idle_gpu is not None:
        return NeuronStatus.DEGRADED, idle_gpu
    if limits.too_slow(speed, baseline):
        return NeuronStatus.DEGRADED, (
            f"decoding at {speed:.1f} tok/s, below {limits.degraded_speed_ratio:.0%} of its "
            f"own baseline of {baseline:.1f} tok/s"
        )
    return NeuronStatus.ACTIVE, None
