"""Measured decode speed per neuron and model: an EWMA of recent requests, and a baseline.

The baseline is the neuron's own typical best: the 90th percentile of its recent samples for
that model. A neuron is compared only with itself, so a slow CPU box is not ``degraded``
for being slow, only for being slower than it usually is.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

BASELINE_WINDOW = 50
BASELINE_QUANTILE = 0.9
MIN_SAMPLES_FOR_BASELINE = 3


@dataclass
class ModelSpeed:
    """Decode speed of one model on one neuron."""

    alpha: float = 0.3
    ewma: float | None = None
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=BASELINE_WINDOW))

    def add(self, tokens_per_second: float) -> None:
        self.samples.append(tokens_per_second)
        if self.ewma is None:
            self.ewma = tokens_per_second
        else:
            self.ewma = self.alpha * tokens_per_second + (1 - self.alpha) * self.ewma

    @property
    def baseline(self) -> float | None:
        if len(self.samples) < MIN_SAMPLES_FOR_BASELINE:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(BASELINE_QUANTILE * len(ordered)))]


@dataclass
class SpeedBook:
    """Speeds of every model a neuron has served, and which was measured last."""

    alpha: float = 0.3
    models: dict[str, ModelSpeed] = field(default_factory=dict)
    last_model: str | None = None

    def add(self, model: str, tokens_per_second: float) -> None:
        self.models.setdefault(model, ModelSpeed(alpha=self.alpha)).add(tokens_per_second)
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
