"""``ganglion bench``: a short fixed generation per model, stored as speed samples."""

from __future__ import annotations

from dataclasses import dataclass

from ganglion.errors import NeuronError
from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry
from ganglion.fleet.traffic import FailureKind, RequestObserver, Silent, failure_kind
from ganglion.neurons.base import GenerateCall

# A counting sequence: every model, however small, keeps going until max_tokens, so the
# measurement covers the whole budget instead of stopping at an early end of answer.
BENCH_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


@dataclass(frozen=True)
class BenchResult:
    neuron: str
    model: str
    ok: bool
    tokens_per_second: float | None = None
    output_tokens: int | None = None
    ttft_s: float | None = None
    wall_s: float | None = None
    error: str | None = None


def bench_request(model: str, max_tokens: int) -> GenerateCall:
    return GenerateCall(
        model=model,
        prompt=BENCH_PROMPT,
        max_tokens=max_tokens,
        options={"temperature": 0.0, "seed": 1},
    )


async def bench_model(
    registry: Registry,
    neuron: Neuron,
    model: str,
    max_tokens: int,
    observer: RequestObserver | None = None,
) -> BenchResult:
    """Stream one fixed completion and record its speed as a ``bench`` sample.

    ``observer`` (the gateway's metrics) hears about it as a request on endpoint ``bench``.
    """
    stats = None
    observer = observer or Silent()
    observer.request_started(neuron.name, model, "bench")
    try:
        async with registry.track(neuron):
            async for chunk in neuron.adapter.generate_stream(bench_request(model, max_tokens)):
                if chunk.done:
                    stats = chunk.stats
    except NeuronError as error:
        observer.request_failed(neuron.name, model, "bench", failure_kind(error))
        await registry.record_failure(neuron, str(error))
        return BenchResult(neuron.name, model, ok=False, error=str(error))
    if stats is None:
        observer.request_failed(neuron.name, model, "bench", FailureKind.STREAM_BROKEN)
        return BenchResult(neuron.name, model, ok=False, error="the stream ended without stats")
    observer.request_finished(neuron.name, model, "bench", stats)
    await registry.record_success(neuron, model, stats, source="bench")
    if stats.decode_tps is None:
        return BenchResult(
            neuron.name,
            model,
            ok=False,
            output_tokens=stats.output_tokens,
            wall_s=stats.wall_s,
            error="the answer had no measurable decode (no output tokens or no timing)",
        )
    return BenchResult(
        neuron.name,
        model,
        ok=True,
        tokens_per_second=stats.decode_tps,
        output_tokens=stats.output_tokens,
        ttft_s=stats.ttft_s,
        wall_s=stats.wall_s,
    )
