from __future__ import annotations

from ganglion.fleet.status import Health, NeuronStatus, Thresholds, classify, is_active

LIMITS = Thresholds(offline_after_failures=2, online_after_successes=2, degraded_error_count=3)


def status_of(health: Health, *, speed: float | None = None, baseline: float | None = None):
    return classify(health, now=100.0, speed=speed, baseline=baseline, limits=LIMITS)


def test_new_neuron_is_active_without_reason() -> None:
    assert status_of(Health()) == (NeuronStatus.ACTIVE, None)


def test_one_lost_probe_does_not_flap_offline() -> None:
    health = Health()
    health.probe_failed("connection refused", LIMITS)
    assert status_of(health)[0] is NeuronStatus.ACTIVE


def test_failures_in_a_row_make_it_offline_with_the_last_reason() -> None:
    health = Health()
    health.probe_failed("timeout", LIMITS)
    health.probe_failed("connection refused", LIMITS)
    status, reason = status_of(health)
    assert status is NeuronStatus.OFFLINE
    assert reason is not None
    assert "connection refused" in reason
    assert "2 probes failed" in reason
    assert not is_active(status)


def test_coming_back_needs_successes_in_a_row() -> None:
    health = Health()
    for _ in range(2):
        health.probe_failed("refused", LIMITS)
    health.probe_succeeded(LIMITS)
    assert status_of(health)[0] is NeuronStatus.OFFLINE
    health.probe_succeeded(LIMITS)
    assert status_of(health)[0] is NeuronStatus.ACTIVE


def test_a_completed_request_is_proof_of_life() -> None:
    health = Health()
    for _ in range(3):
        health.probe_failed("refused", LIMITS)
    health.request_completed()
    assert status_of(health)[0] is NeuronStatus.ACTIVE


def test_failed_requests_degrade_but_never_take_offline() -> None:
    health = Health()
    for index in range(5):
        health.request_failed(90.0 + index, f"HTTP 500 #{index}")
    status, reason = status_of(health)
    assert status is NeuronStatus.DEGRADED
    assert reason is not None
    assert "HTTP 500 #4" in reason
    assert is_active(status)


def test_old_errors_age_out_of_the_window() -> None:
    health = Health()
    for _ in range(5):
        health.request_failed(-1000.0, "old")
    assert status_of(health)[0] is NeuronStatus.ACTIVE


def test_slow_against_its_own_baseline_is_degraded() -> None:
    status, reason = status_of(Health(), speed=20.0, baseline=90.0)
    assert status is NeuronStatus.DEGRADED
    assert reason is not None
    assert "20.0 tok/s" in reason
    assert "90.0" in reason


def test_slow_neuron_at_its_usual_speed_is_active() -> None:
    assert status_of(Health(), speed=5.4, baseline=5.8)[0] is NeuronStatus.ACTIVE


def test_suspended_wins_and_is_not_active() -> None:
    health = Health(suspended=True)
    health.probe_failed("x", LIMITS)
    health.probe_failed("x", LIMITS)
    status, reason = status_of(health)
    assert status is NeuronStatus.SUSPENDED
    assert reason is not None
    assert not is_active(status)
