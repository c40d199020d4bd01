from __future__ import annotations

import pytest

from ganglion.fleet.speed import SpeedBook
from ganglion.neurons.base import TokenStats


def test_ewma_follows_samples() -> None:
    book = SpeedBook(alpha=0.5)
    book.add("m", 100.0)
    book.add("m", 50.0)
    assert book.speed("m") == pytest.approx(75.0)
    assert book.speed() == pytest.approx(75.0)


def test_baseline_needs_a_few_samples_then_is_the_high_quantile() -> None:
    book = SpeedBook()
    book.add("m", 80.0)
    book.add("m", 90.0)
    assert book.baseline("m") is None
    for value in (85.0, 88.0, 20.0):
        book.add("m", value)
    assert book.baseline("m") == 90.0


def test_models_are_kept_apart_and_last_model_is_reported() -> None:
    book = SpeedBook()
    book.add("big", 10.0)
    book.add("small", 60.0)
    assert book.by_model() == {"big": 10.0, "small": 60.0}
    assert book.speed() == 60.0
    assert book.speed("unknown") is None


def test_prefill_and_cold_loads_are_measured_where_they_mean_something() -> None:
    book = SpeedBook(alpha=0.5)
    book.observe("m", TokenStats(prompt_tokens=400, output_tokens=50, prefill_s=2.0, decode_s=1.0))
    assert book.speed("m") == 50.0
    assert book.prefill == {"m": 200.0}
    book.observe("m", TokenStats(prompt_tokens=800, prefill_s=2.0))
    assert book.prefill == {"m": 300.0}  # an EWMA
    book.observe("m", TokenStats(prompt_tokens=5, prefill_s=1.0))  # overhead, not reading
    assert book.prefill == {"m": 300.0}
    assert book.loads == {}
    book.observe("m", TokenStats(load_s=0.004))  # already in memory: no load measured
    assert book.loads == {}
    book.observe("m", TokenStats(load_s=8.0))
    book.observe("m", TokenStats(load_s=4.0))
    assert book.loads == {"m": 6.0}
