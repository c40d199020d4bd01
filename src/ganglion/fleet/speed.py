"""Measured speeds per neuron and model: decode (an EWMA of recent requests, and a baseline),
prefill, and the time a cold model takes to load.

The baseline is the neuron's own typical best: the 90th percentile of its recent samples for
that model. A neuron is compared only with itself, so a slow CPU box is not ``degraded``
for being slow, only for being slower than it usually is.

Prefill is measured only on prompts of :data:`MIN_PREFILL_TOKENS` or more (shorter ones
measure a request's fixed overhead, not reading speed), and load time only from loads of
:data:`COLD_LOAD_S` or more (a shorter one means the model was already in memory: Ollama
reports a few milliseconds then). The router uses them where known (:mod:`ganglion.routing`).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from ganglion.neurons.base import TokenStats

BASELINE_WINDOW = 50
BASELINE_QUANTILE = 0.9
MIN_SAMPLES_FOR_BASELINE = 3
MIN_PREFILL_TOKENS = 16
COLD_LOAD_S = 0.5


def ewma(old: float | None, new: float, alpha: float) -> float:
    """``new`` weighted ``alpha`` against the average so far (``new`` itself at first)."""
    return new if old is None else alpha * new + (1 - alpha) * old


@dataclass
class ModelSpeed:
    """Decode speed of one model on one neuron."""

    alpha: float = 0.3
    ewma: float | None = None
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=BASELINE_WINDOW))

    _ordered: list[float] = field(default_factory=list, init=False, repr=False, compare=False)
    """The samples in order, kept so as each comes: every request asks for the baseline."""

    def add(self, tokens_per_second: float) -> None:
        if len(self.samples) == self.samples.maxlen:
            del self._ordered[bisect.bisect_left(self._ordered, self.samples[0])]
        self.samples.append(tokens_per_second)
        bisect.insort(self._ordered, tokens_per_second)
        self.ewma = ewma(self.ewma, tokens_per_second, self.alpha)

    @property
    def baseline(self) -> float | None:
        ordered = self._ordered
        if len(ordered) < MIN_SAMPLES_FOR_BASELINE:
            return None
        return ordered[min(len(ordered) - 1, int(BASELINE_QUANTILE * len(ordered)))]


@dataclass
class SpeedBook:
    """Speeds of every model a neuron has served, and which was measured last."""

    alpha: float = 0.3
    models: dict[str, ModelSpeed] = field(default_factory=dict)
    last_model: str | None = None
    prefill: dict[str, float] = field(default_factory=dict)
    """Prompt tokens read per second, by model (an EWMA)."""
    loads: dict[str, float] = field(default_factory=dict)
    """Seconds a cold load of each model took (an EWMA)."""
    version: int = 0
    """Counts the changes, so that what is built from the speeds can tell it is stale."""

    def observe(self, model: str, stats: TokenStats) -> None:
        """Take in what one request cost: its decode, prefill and load, where measurable."""
        self.version += 1
        if (tps := stats.decode_tps) is not None:
            self.add(model, tps)
        prefill = stats.prefill_tps
        if prefill is not None and (stats.read_tokens or 0) >= MIN_PREFILL_TOKENS:
            self.prefill[model] = ewma(self.prefill.get(model), prefill, self.alpha)
        if stats.load_s is not None and stats.load_s >= COLD_LOAD_S:
            self.loads[model] = ewma(self.loads.get(model), stats.load_s, self.alpha)

    def add(self, model: str, tokens_per_second: float) -> None:
        self.version += 1
        entry = self.models.get(model)
        if entry is None:
            entry = self.models[model] = ModelSpeed(alpha=self.alpha)
        entry.add(tokens_per_second)
        self.last_model = model

    def speed(self, model: str | None = None) -> float | None:
        """The EWMA for ``model``, or for the model measured last."""
        entry = self.models.get(model or self.last_model or "")
        return entry.ewma if entry else None

    def baseline(self, model: str | None = None) -> float | None:
        entry = self.models.get(model or self.last_model or "")
        return entry.baseline if entry else None

    def by_model(self) -> dict[str, float]:
        return {name: entry.ewma for name, entry in self.models.items() if entry.ewma is not None}
