"""Choosing the neuron that will finish a request first, and failing over when one fails.

The predicted finish time of a job on a neuron (DESIGN.md, "Routing and scheduling")::

    finish = backlog / (slots * decode)          queue wait: work already on the neuron
           + prompt_tokens / prefill             prefill
           + expected_output / decode            decode
           + load_s                              when the model is not loaded (Ollama /api/ps):
                                                 what is left of the load if one is under way

``decode`` is the neuron's measured EWMA for the model (the fleet's median for that model,
or :data:`PRIOR_DECODE_TPS`, before any measurement). ``prefill`` and ``load_s`` are the
neuron's measured ones for the model (:mod:`ganglion.fleet.speed`); before any measurement,
prefill is :data:`PREFILL_FACTOR` times decode and a load :data:`DEFAULT_LOAD_S`.
``backlog`` is the output tokens the neuron still owes its in-flight jobs (draining at
slots x decode), known because every job passes through :meth:`Router.admit`. Routing
policies (which neuron gets a request: ``GANGLION_ROUTING_POLICY``) are small strategy objects
in :data:`ROUTING_POLICIES`; the :class:`Router` keeps the in-flight book, the cooldowns and
the admission limits. (How a plan's subtasks are placed is a schedule policy:
:mod:`ganglion.orchestra.schedule`.)
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from ganglion.errors import NoNeuronForModel, PinnedUnavailable
from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry

PRIOR_DECODE_TPS = 20.0
PREFILL_FACTOR = 10.0  # prefill runs about this many times faster than decode when unmeasured
DEFAULT_OUTPUT_TOKENS = 256
DEFAULT_LOAD_S = 5.0


def same_model(a: str, b: str) -> bool:
    """Ollama's rule: ``llama3`` and ``llama3:latest`` name the same model."""
    return a.removesuffix(":latest") == b.removesuffix(":latest")


@dataclass(frozen=True)
class Job:
    """What the router knows of a request before it runs."""

    model: str
    prompt_tokens: int = 0
    output_tokens: int = DEFAULT_OUTPUT_TOKENS


@dataclass
class Ticket:
    job: Job
    started: float
    decode_tps: float


@dataclass
class Book:
    """The jobs in flight on one neuron, the output tokens it still owes them, and until
    when it is cooling down. The debt drains at the neuron's aggregate rate (slots x decode)
    while it has work: queued jobs wait, they do not decode."""

    tickets: list[Ticket] = field(default_factory=list)
    cool_until: float = 0.0
    owed: float = 0.0
    stamp: float = 0.0
    rate: float = 0.0

    def backlog(self, now: float) -> float:
        """Output tokens the neuron still owes its in-flight jobs."""
        if not self.tickets:
            return 0.0
        return max(self.owed - self.rate * (now - self.stamp), 0.0)

    def add(self, ticket: Ticket, now: float, slots: int) -> None:
        self.owed = self.backlog(now) + ticket.job.output_tokens
        self.stamp, self.rate = now, slots * ticket.decode_tps
        self.tickets.append(ticket)

    def remove(self, ticket: Ticket, now: float) -> None:
        self.owed, self.stamp = self.backlog(now), now
        self.tickets.remove(ticket)
        if not self.tickets:
            self.owed = 0.0


@dataclass(frozen=True)
class Estimate:
    neuron: Neuron
    finish_s: float
    wait_s: float
    decode_tps: float
    queued: int = 0


class RoutingPolicy(Protocol):
    """Which neuron gets a request: the candidates ranked."""

    name: str

    def rank(self, estimates: list[Estimate]) -> list[Estimate]:
        """The candidates, best first."""
        ...


class FinishTime:
    """Earliest predicted finish time first (the default)."""

    name = "finish-time"

    def rank(self, estimates: list[Estimate]) -> list[Estimate]:
        return sorted(estimates, key=lambda e: (e.finish_s, e.queued, e.neuron.name))


class LeastBusy:
    """Fewest requests in flight per slot first; speed breaks ties."""

    name = "least-busy"

    def rank(self, estimates: list[Estimate]) -> list[Estimate]:
        return sorted(
            estimates,
            key=lambda e: (e.queued / e.neuron.slots, -e.decode_tps, e.neuron.name),
        )


class RoundRobin:
    """Each candidate in turn, whatever its speed (for comparison)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def rank(self, estimates: list[Estimate]) -> list[Estimate]:
        ordered = sorted(estimates, key=lambda e: e.neuron.name)
        if not ordered:
            return ordered
        start = next(self._turn) % len(ordered)
        return ordered[start:] + ordered[:start]


ROUTING_POLICIES: dict[str, Callable[[], RoutingPolicy]] = {}


def register_routing_policy(name: str, factory: Callable[[], RoutingPolicy]) -> None:
    ROUTING_POLICIES[name] = factory


for _policy in (FinishTime, LeastBusy, RoundRobin):
    register_routing_policy(_policy.name, _policy)


class Router:
    """Ranks the neurons for a job and keeps the in-flight book the ranking needs."""

    def __init__(
        self,
        registry: Registry,
        policy: RoutingPolicy | None = None,
        *,
        cooldown_s: float = 15.0,
        max_queue: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.policy = policy or FinishTime()
        self.cooldown_s = cooldown_s
        self.max_queue = max_queue
        self.clock = clock
        self._books: dict[str, Book] = {}

    def book(self, neuron: Neuron) -> Book:
        return self._books.setdefault(neuron.name, Book())

    def serving(self, model: str) -> list[Neuron]:
        """Active neurons that serve ``model``."""
        return [
            n
            for n in self.registry.neurons()
            if n.is_active and any(same_model(model, m) for m in n.models)
        ]

    def full(self, neuron: Neuron) -> bool:
        """A neuron's queue is bounded: ``slots`` running plus ``max_queue`` waiting."""
        return len(self.book(neuron).tickets) >= neuron.slots + self.max_queue

    def decode_tps(self, neuron: Neuron, model: str, typical: float | None = None) -> float:
        """``neuron``'s measured decode speed for ``model``, else the fleet's
        :meth:`typical_tps` (``typical``, where the caller worked it out already: once for a
        whole ranking, not once per unmeasured neuron, which is quadratic in the fleet)."""
        measured = _speed(neuron, model)
        if measured:
            return measured
        return typical if typical is not None else self.typical_tps(model)

    def typical_tps(self, model: str, serving: list[Neuron] | None = None) -> float:
        """The median measured decode speed of the neurons ``serving`` ``model`` (by default
        all of them), or a prior when none is measured yet."""
        neurons = self.serving(model) if serving is None else serving
        known = [s for n in neurons if (s := _speed(n, model))]
        return statistics.median(known) if known else PRIOR_DECODE_TPS

    def prefill_tps(self, neuron: Neuron, model: str, decode: float | None = None) -> float:
        """How fast ``neuron`` reads a prompt for ``model``: measured, or a multiple of decode."""
        measured = _measured(neuron.speeds.prefill, model)
        return measured or (decode or self.decode_tps(neuron, model)) * PREFILL_FACTOR

    def estimate(self, neuron: Neuron, job: Job, typical: float | None = None) -> Estimate:
        now = self.clock()
        decode = self.decode_tps(neuron, job.model, typical)
        book = self.book(neuron)
        busy = len(book.tickets) >= neuron.slots
        wait = book.backlog(now) / (neuron.slots * decode) if busy else 0.0
        prefill = job.prompt_tokens / self.prefill_tps(neuron, job.model, decode)
        loaded = neuron.loaded
        cold = loaded is not None and not any(same_model(job.model, m) for m in loaded)
        load = 0.0
        if cold:
            # Not loaded: this job loads the model, or waits for the load already under way
            # (started with the neuron's oldest job in flight): it holds up the queue too.
            load = _measured(neuron.speeds.loads, job.model) or DEFAULT_LOAD_S
            if book.tickets:
                started = min(ticket.started for ticket in book.tickets)
                load = max(load - (now - started), 0.0)
        finish = wait + prefill + job.output_tokens / decode + load
        return Estimate(neuron, finish, wait, decode, len(book.tickets))

    def rank(self, job: Job, *, pinned: str | None = None) -> list[Estimate]:
        """Candidates for ``job``, best first: neurons cooling down and full ones go last
        (full ones not at all); a pinned neuron is the only candidate."""
        if pinned is not None:
            return [self.estimate(self._pinned(pinned, job.model), job)]
        now = self.clock()
        serving = self.serving(job.model)
        typical = self.typical_tps(job.model, serving)
        open_ = [n for n in serving if not self.full(n)]
        ranked = self.policy.rank([self.estimate(n, job, typical) for n in open_])
        warm = [e for e in ranked if self.book(e.neuron).cool_until <= now]
        cooling = [e for e in ranked if self.book(e.neuron).cool_until > now]
        return warm + cooling

    def _pinned(self, name: str, model: str) -> Neuron:
        """The neuron a caller asked for by name, if it can take the job."""
        neuron = self.registry.get(name)
        if not neuron.is_active:
            raise PinnedUnavailable(
                f"neuron {name!r} is {neuron.status}: {neuron.reason}; resume it, or send the "
                "request without the X-Ganglion-Neuron header"
            )
        if not any(same_model(model, m) for m in neuron.models):
            raise NoNeuronForModel(
                f"neuron {name!r} does not serve {model!r} (it serves "
                f"{', '.join(neuron.models) or 'nothing'})"
            )
        return neuron

    def retry_after_s(self, model: str) -> float:
        """When a saturated fleet will likely have room for one more job."""
        now = self.clock()
        serving = self.serving(model)
        typical = self.typical_tps(model, serving)
        waits = [
            self.book(n).backlog(now) / (n.slots * self.decode_tps(n, model, typical))
            for n in serving
        ]
        return max(1.0, min(waits, default=5.0))

    def cool_down(self, neuron: Neuron) -> None:
        self.book(neuron).cool_until = self.clock() + self.cooldown_s

    def warm_up(self, neuron: Neuron) -> None:
        self.book(neuron).cool_until = 0.0

    @contextmanager
    def admit(self, estimate: Estimate, job: Job) -> Iterator[Ticket]:
        """Count ``job`` against its neuron's backlog while it runs."""
        ticket = Ticket(job, self.clock(), estimate.decode_tps)
        book = self.book(estimate.neuron)
        book.add(ticket, self.clock(), estimate.neuron.slots)
        try:
            yield ticket
        finally:
            book.remove(ticket, self.clock())


def _speed(neuron: Neuron, model: str) -> float | None:
    return _measured(neuron.speeds.by_model(), model)


def _measured(by_model: dict[str, float], model: str) -> float | None:
    """The figure measured for ``model`` (``llama3`` and ``llama3:latest`` alike), if any."""
    for name, value in by_model.items():
        if same_model(name, model):
            return value
    return None
