"""The neuron being simulated: :class:`SimConfig`, its speeds, slots and faults, validated once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ganglion.errors import ConfigError
from ganglion.net import is_loopback

DEFAULT_OUTPUT_TOKENS = 64
PREFILL_FACTOR = 10.0
"""Without ``--prefill-tps``, prompts are read this many times faster than tokens are written."""


@dataclass(frozen=True)
class SimConfig:
    """The neuron being simulated. Invalid or unsafe values raise :class:`ConfigError`."""

    models: tuple[str, ...]
    tps: float
    """Decode speed of one stream, tokens per second."""
    slots: int = 1
    """Generations that run at once; further requests queue, first come first served."""
    aggregate_tps: float | None = None
    """Total decode speed shared by all streams (default ``tps * slots``: no contention)."""
    prefill_tps: float | None = None
    """Prompt reading speed, tokens per second (default ``10 * tps``)."""
    load_s: float = 0.0
    """One-time model load on the first request for each model."""
    fail_rate: float = 0.0
    """Fraction of generations answered HTTP 500 before any byte."""
    hang_rate: float = 0.0
    """Fraction of generations never answered until the client gives up."""
    stall_rate: float = 0.0
    """Fraction of generations that stream ``stall_after_tokens`` tokens, then nothing more."""
    stall_after_tokens: int = 1
    seed: int | None = None
    name: str = "sim"
    host: str = "127.0.0.1"
    port: int = 11434
    allow_public: bool = False
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    """Answer length when the client sets no limit."""
    structured: str | None = None
    """The scripted answer to every schema-constrained request, sent as it is: a brain's
    plan as JSON, or anything else for a brain that breaks its schema."""
    vram: float = 1.0
    """Share of each loaded model in GPU memory, as ``/api/ps`` reports it (``size_vram``):
    0 plays a GPU box whose models fell back to the CPU."""
    cache_slots: int = 0
    """Prompts kept in the prompt (KV) cache, least recently used evicted first: a prompt
    that starts with one of them is read only past it. 0: every prompt is read in full."""
    keep_alive_s: int = 5
    """Seconds an idle client connection stays open: 5 as uvicorn (vLLM) and llama.cpp's
    server do; Ollama keeps one until the client closes it (play it with a large number)."""

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if not self.models or not all(name.strip() for name in self.models):
            problems.append("give at least one model name with --model")
        for flag, value in [
            ("--tps", self.tps),
            ("--aggregate-tps", self.aggregate_tps),
            ("--prefill-tps", self.prefill_tps),
        ]:
            if value is not None and not (math.isfinite(value) and value > 0):
                problems.append(f"{flag} must be a positive number of tokens/s, not {value}")
        for flag, count, least in [
            ("--slots", self.slots, 1),
            ("--cache-slots", self.cache_slots, 0),
            ("--stall-after-tokens", self.stall_after_tokens, 1),
            ("--output-tokens", self.output_tokens, 1),
            ("--keep-alive", self.keep_alive_s, 1),
        ]:
            if count < least:
                problems.append(f"{flag} must be at least {least}, not {count}")
        if not (math.isfinite(self.load_s) and self.load_s >= 0):
            problems.append(f"--load-s must be zero or more seconds, not {self.load_s}")
        rates = [
            ("--fail-rate", self.fail_rate),
            ("--hang-rate", self.hang_rate),
            ("--stall-rate", self.stall_rate),
            ("--vram", self.vram),
        ]
        for flag, rate in rates:
            if not 0 <= rate <= 1:
                problems.append(f"{flag} must be a fraction between 0 and 1, not {rate}")
        if self.fail_rate + self.hang_rate + self.stall_rate > 1:
            problems.append("--fail-rate, --hang-rate and --stall-rate together must not exceed 1")
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be between 0 and 65535, not {self.port}")
        if not self.allow_public and not is_loopback(self.host):
            problems.append(
                f"refusing --host {self.host}: the simulator has no auth; "
                "bind a loopback address or pass --allow-public"
            )
        return problems

    @property
    def aggregate_rate(self) -> float:
        return self.aggregate_tps if self.aggregate_tps is not None else self.tps * self.slots

    @property
    def prefill_rate(self) -> float:
        return self.prefill_tps if self.prefill_tps is not None else self.tps * PREFILL_FACTOR

    def public(self) -> dict[str, Any]:
        """The configuration as JSON, with the effective (defaulted) rates filled in."""
        return asdict(self) | {
            "models": list(self.models),
            "aggregate_tps": self.aggregate_rate,
            "prefill_tps": self.prefill_rate,
        }

    def describe(self) -> str:
        """One line: the models and the rates being simulated."""
        faults = f", fail {self.fail_rate:g}, hang {self.hang_rate:g}"
        if self.stall_rate:
            faults += f", stall {self.stall_rate:g} after {self.stall_after_tokens} tokens"
        faulty = self.fail_rate or self.hang_rate or self.stall_rate
        vram = f", {self.vram:.0%} of each model in VRAM" if self.vram < 1 else ""
        if self.cache_slots:
            vram += f", prompt cache of {self.cache_slots}"
        return (
            f"models {', '.join(self.models)}; decode {self.tps:g} tok/s per stream x "
            f"{self.slots} slot{'s' if self.slots != 1 else ''} "
            f"(aggregate {self.aggregate_rate:g}), prefill {self.prefill_rate:g} tok/s, "
            f"load {self.load_s:g} s{faults if faulty else ''}{vram}"
        )
