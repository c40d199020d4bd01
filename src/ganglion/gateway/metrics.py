"""Prometheus ``/metrics`` for the gateway: traffic counters, and the fleet read at scrape time.

One :class:`Metrics` per app (``app.state.metrics``, also ``gateway.metrics``), each with its
own :class:`~prometheus_client.CollectorRegistry`; there is no process-wide registry, so two
apps in one process (tests) never share a count. Every series is documented in
``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import reduce
from operator import add, attrgetter
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ganglion.fleet.status import NeuronStatus
from ganglion.fleet.traffic import FailureKind
from ganglion.neurons.base import TokenStats

if TYPE_CHECKING:
    from ganglion.fleet.neuron import Neuron

router = APIRouter(tags=["metrics"])

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds. From a warm GPU (tens of ms) to a cold model load on a CPU box (a minute or two)."""

NEURON_MODEL = ("neuron", "model")

RUN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Seconds. From a short direct answer on a GPU to a long task split across CPU boxes."""

RUN_PHASES = ("decompose", "parallel", "synthesize", "total", "first_token")
"""The phases of a run's ``timings`` (``decompose_s``...) that ``ganglion_run_seconds`` draws."""

RUN_OUTCOMES = frozenset({"completed", "failed", "cancelled"})

MAX_UNSETTLED = 1024
"""Finished requests' stats kept for the next scrape at most: then they are settled."""


class FleetCollector(Collector):
    """The fleet as it is at scrape time: status, activity and measured speed per neuron."""

    def __init__(self) -> None:
        self.neurons: Callable[[], Iterable[Neuron]] = list

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        status, active, speed, prefill, load, vram, idle = families = self._families()
        for neuron in self.neurons():
            for each in NeuronStatus:
                status.add_metric([neuron.name, each.value], float(neuron.status == each))
            active.add_metric([neuron.name], float(neuron.is_active))
            idle.add_metric([neuron.name], float(neuron.idle_gpu is not None))
            for model, where in sorted((neuron.memory or {}).items()):
                if where.size_bytes > 0:
                    vram.add_metric([neuron.name, model], where.vram_bytes / where.size_bytes)
            book = neuron.speeds
            for family, by_model in (
                (speed, book.by_model()),
                (prefill, book.prefill),
                (load, book.loads),
            ):
                for model, figure in sorted(by_model.items()):
                    family.add_metric([neuron.name, model], figure)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "ganglion_neuron_status",
                "1 for the neuron's current status, 0 for the others.",
                labels=["neuron", "status"],
            ),
            GaugeMetricFamily(
                "ganglion_neuron_active",
                "1 when the neuron takes work (active or degraded), 0 when offline or suspended.",
                labels=["neuron"],
            ),
            GaugeMetricFamily(
                "ganglion_neuron_tokens_per_second",
                "Measured decode speed (moving average of recent requests), output tokens/s.",
                labels=list(NEURON_MODEL),
            ),
            GaugeMetricFamily(
                "ganglion_neuron_prefill_tokens_per_second",
                "Measured prefill speed (moving average, prompts of 16 tokens or more), "
                "prompt tokens/s.",
                labels=list(NEURON_MODEL),
            ),
            GaugeMetricFamily(
                "ganglion_neuron_load_seconds",
                "Measured time to load the model when it was not in memory (moving average).",
                labels=list(NEURON_MODEL),
            ),
            GaugeMetricFamily(
                "ganglion_neuron_model_vram_ratio",
                "Share of a loaded model in the GPU's memory (Ollama /api/ps size_vram / size): "
                "below 1, part of it runs on the CPU.",
                labels=list(NEURON_MODEL),
            ),
            GaugeMetricFamily(
                "ganglion_neuron_idle_gpu",
                "1 when the node has a GPU that contributes nothing to the neuron (a model on the "
                "CPU, a driver without CUDA): the neuron's idle_gpu says why.",
                labels=["neuron"],
            ),
        ]


class Tally:
    """What one neuron and model owe the series since the last :meth:`Metrics.settle`: a
    request adds to it, a scrape settles it. ``in_flight`` is the count itself, not owed
    (None until a request starts there: no series before); the finished requests' token
    stats are kept as they came, and summed when settled."""

    __slots__ = ("answers", "hits", "in_flight", "misses", "predicted_tokens", "requests")

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}  # by endpoint
        self.in_flight: int | None = None
        self.answers: list[TokenStats] = []
        self.hits = 0
        self.misses = 0
        self.predicted_tokens = 0


class Metrics:
    """The gateway's Prometheus series. The request path calls :meth:`request_started` and
    then exactly one of :meth:`request_finished` or :meth:`request_failed`; it is a
    :class:`ganglion.fleet.traffic.RequestObserver`.

    The request path only adds up what it owes the series, in plain numbers on one
    :class:`Tally` per neuron and model (a ``Counter.inc`` checks and locks, and a request
    makes about ten); :meth:`exposition` brings the series up to date before it writes them
    (:meth:`settle`). The finished requests' token stats, kept as they came, are settled
    too once :data:`MAX_UNSETTLED` wait."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fleet = FleetCollector()
        self.registry.register(self.fleet)
        registry = self.registry
        self.requests = Counter(
            "ganglion_requests",
            "Requests sent to a neuron, counted when they start.",
            [*NEURON_MODEL, "endpoint"],
            registry=registry,
        )
        self.errors = Counter(
            "ganglion_request_errors",
            "Requests to a neuron that failed, by kind: unreachable, http_error, stream_broken, "
            "timeout, rejected.",
            [*NEURON_MODEL, "endpoint", "kind"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "ganglion_requests_in_flight",
            "Requests running on a neuron now.",
            NEURON_MODEL,
            registry=registry,
        )
        self.prompt_tokens = self._counter("ganglion_prompt_tokens", "Prompt tokens processed.")
        self.cached_tokens = self._counter(
            "ganglion_prompt_cached_tokens",
            "Prompt tokens neurons reported they found in their KV cache (not read again).",
        )
        self.cache_predictions = Counter(
            "ganglion_prefix_cache_predictions",
            "Requests that started answering, by whether the router predicted their neuron to "
            "hold part of the prompt in its KV cache: outcome hit or miss.",
            [*NEURON_MODEL, "outcome"],
            registry=registry,
        )
        self.predicted_cached_tokens = self._counter(
            "ganglion_prefix_cache_predicted_tokens",
            "Prompt tokens the router predicted neurons to hold in their KV cache.",
        )
        self.output_tokens = self._counter("ganglion_output_tokens", "Output tokens generated.")
        self.prefill_seconds = self._counter(
            "ganglion_prefill_seconds", "Time neurons spent on prompts (prefill), as they report."
        )
        self.decode_seconds = self._counter(
            "ganglion_decode_seconds", "Time neurons spent generating output tokens (decode)."
        )
        self.load_seconds = self._counter(
            "ganglion_load_seconds", "Time neurons spent loading models into memory."
        )
        self.ttft = Histogram(
            "ganglion_time_to_first_token_seconds",
            "From sending a request to its first output token, measured by the gateway.",
            NEURON_MODEL,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.runs, self.run_seconds = _run_series(registry)
        # Each counter of what the neurons report, and the field of TokenStats it adds up.
        self._amounts = (
            self.prompt_tokens,
            self.cached_tokens,
            self.output_tokens,
            self.prefill_seconds,
            self.decode_seconds,
            self.load_seconds,
        )
        self._reported = attrgetter(
            "prompt_tokens", "cached_tokens", "output_tokens", "prefill_s", "decode_s", "load_s"
        )
        self._children: dict[tuple[object, ...], Any] = {}
        # Owed to the series since the last settle: a tally by (neuron, model), and the
        # errors by (metric, *labels); both bounded by the series there are. The finished
        # requests' stats, in the tallies: MAX_UNSETTLED in all.
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._owed: dict[tuple[Any, ...], float] = {}
        self._unsettled = 0

    def _child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, made once: ``labels()`` checks and locks on every
        call, and a request touches a dozen series. A series appears when first used, as
        before (one a neuron never reported stays absent, not a misleading zero)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _counter(self, name: str, documentation: str) -> Counter:
        return Counter(name, documentation, NEURON_MODEL, registry=self.registry)

    def watch(self, neurons: Callable[[], Iterable[Neuron]]) -> None:
        """Read the fleet from ``neurons()`` at each scrape (``registry.neurons``)."""
        self.fleet.neurons = neurons

    def _tally(self, neuron: str, model: str) -> Tally:
        tally = self._tallies.get((neuron, model))
        if tally is None:
            tally = self._tallies[neuron, model] = Tally()
        return tally

    def request_started(self, neuron: str, model: str, endpoint: str) -> None:
        tally = self._tally(neuron, model)
        tally.requests[endpoint] = tally.requests.get(endpoint, 0) + 1
        tally.in_flight = (tally.in_flight or 0) + 1

    def request_finished(self, neuron: str, model: str, endpoint: str, stats: TokenStats) -> None:
        tally = self._tally(neuron, model)
        if tally.in_flight:
            tally.in_flight -= 1
        tally.answers.append(stats)
        self._unsettled += 1
        if self._unsettled >= MAX_UNSETTLED:
            self.settle()

    def prefix_predicted(self, neuron: str, model: str, cached_tokens: int) -> None:
        tally = self._tally(neuron, model)
        if cached_tokens > 0:
            tally.hits += 1
            tally.predicted_tokens += cached_tokens
        else:
            tally.misses += 1

    def request_failed(self, neuron: str, model: str, endpoint: str, kind: str) -> None:
        """``kind`` is a :class:`~ganglion.fleet.traffic.FailureKind` value (else ValueError)."""
        self._add(1, self.errors, neuron, model, endpoint, FailureKind(kind).value)
        tally = self._tallies.get((neuron, model))
        if tally is not None and tally.in_flight:  # not if rejected before any start
            tally.in_flight -= 1

    def _add(self, amount: float, counter: Counter, *labels: str) -> None:
        """Owe ``counter``'s series of ``labels`` ``amount`` more, until :meth:`settle`: for
        what a tally does not keep (errors, by endpoint and kind)."""
        key = (counter, *labels)
        self._owed[key] = self._owed.get(key, 0) + amount

    def settle(self) -> None:
        """Bring the series up to date with what the request path counted since the last
        time. A series appears when first counted, as with ``inc`` at once (one a neuron
        never reported stays absent, not a misleading zero)."""
        owed, self._owed = self._owed, {}
        for (counter, *labels), amount in owed.items():
            self._child(counter, *labels).inc(amount)
        self._unsettled = 0
        for (neuron, model), tally in self._tallies.items():
            self._settle(neuron, model, tally)

    def _settle(self, neuron: str, model: str, tally: Tally) -> None:
        for endpoint, count in tally.requests.items():
            self._child(self.requests, neuron, model, endpoint).inc(count)
        answers = tally.answers
        by_field = zip(*map(self._reported, answers), strict=True)  # nothing when no answers
        for counter, amounts in zip(self._amounts, by_field, strict=False):
            # None when the neuron did not say; a counter never goes down, but a series
            # appears when first counted, even at 0.
            said = [amount if amount > 0 else 0 for amount in amounts if amount]
            if said:  # added in turn, as they came (sum() may round otherwise)
                self._child(counter, neuron, model).inc(reduce(add, said))
        for stats in answers:
            if stats.ttft_s is not None:
                self._child(self.ttft, neuron, model).observe(stats.ttft_s)
        for outcome, count in (("hit", tally.hits), ("miss", tally.misses)):
            if count:
                self._child(self.cache_predictions, neuron, model, outcome).inc(count)
        if tally.predicted_tokens:
            self._child(self.predicted_cached_tokens, neuron, model).inc(tally.predicted_tokens)
        if tally.in_flight is not None:
            self._child(self.in_flight, neuron, model).set(tally.in_flight)
        tally.requests.clear()
        answers.clear()
        tally.hits = tally.misses = tally.predicted_tokens = 0

    def run_event(self, run_id: str, event: Mapping[str, Any]) -> None:
        """An orchestra event (:meth:`~ganglion.orchestra.events.RunEvents.listen`): a run's
        ``done`` counts it once, with the phases its timings measured."""
        run = event.get("run")
        if event.get("type") != "done" or not isinstance(run, Mapping):
            return
        status = str(run.get("status"))
        self.runs.labels(status if status in RUN_OUTCOMES else "other").inc()
        timings = run.get("timings") or {}
        for phase in RUN_PHASES:
            seconds = timings.get(f"{phase}_s")
            if isinstance(seconds, int | float) and seconds >= 0:
                self.run_seconds.labels(phase).observe(seconds)

    def exposition(self) -> bytes:
        self.settle()
        return generate_latest(self.registry)


def _run_series(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    runs = Counter(
        "ganglion_runs",
        "Orchestrated runs that ended on this gateway, by outcome.",
        ["status"],
        registry=registry,
    )
    seconds = Histogram(
        "ganglion_run_seconds",
        "Where ended runs' time went, by phase: decompose, parallel, synthesize, total, "
        "and first_token (from the request to the first answer token).",
        ["phase"],
        buckets=RUN_BUCKETS,
        registry=registry,
    )
    return runs, seconds


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


@router.get("/metrics", response_class=Response)
async def scrape(request: Request) -> Response:
    """Prometheus text format. Read in the event loop: the fleet's state is not thread-safe."""
    return Response(metrics_of(request).exposition(), media_type=CONTENT_TYPE_LATEST)
