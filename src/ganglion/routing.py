"""Choosing the neuron that will finish a request first, and failing over when one fails.

The predicted finish time of a job on a neuron (DESIGN.md, "Routing and scheduling")::

    finish = backlog / (slots * decode)          queue wait: work already on the neuron
           + (prompt_tokens - cached) / prefill  prefill of what the neuron does not hold
           + expected_output / decode            decode
           + load_s                              when the model is not loaded (Ollama /api/ps):
                                                 what is left of the load if one is under way

``decode`` is the neuron's measured EWMA for the model (the fleet's median for that model,
or :data:`PRIOR_DECODE_TPS`, before any measurement). ``prefill`` and ``load_s`` are the
neuron's measured ones for the model (:mod:`ganglion.fleet.speed`); before any measurement,
prefill is :data:`PREFILL_FACTOR` times decode and a load :data:`DEFAULT_LOAD_S`.
``cached`` is the tokens of the job's prompt the neuron is predicted to hold in its KV cache
from the prompts it served lately (:mod:`ganglion.prefixes`): a conversation's next turn
reads only its new messages on the neuron that answered the turn before.
``backlog`` is the work the neuron still owes its in-flight jobs, in output tokens (their
output, and their prompts' prefill converted at decode / prefill), draining at
slots x decode, known because every job passes through :meth:`Router.take`. Routing
policies (which neuron gets a request: ``GANGLION_ROUTING_POLICY``) are small strategy objects
in :data:`ROUTING_POLICIES`; the :class:`Router` keeps the in-flight book, the prefix
indexes, the cooldowns and the admission limits. (How a plan's subtasks are placed is a
schedule policy: :mod:`ganglion.orchestra.schedule`.)
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
from ganglion.fleet.board import Board, Load
from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry
from ganglion.prefixes import PrefixIndex, Prompt

PRIOR_DECODE_TPS = 20.0
PREFILL_FACTOR = 10.0  # prefill runs about this many times faster than decode when unmeasured
DISPLACED_TURNS = 4.0
"""A conversation whose prompt a job pushes out of a full cache is taken to come back this
many times, reading its prompt again each time (while the cache stays full, a conversation
pushed out pushes out another: the cost of a first eviction is rarely one re-read). A raw
prompt (``/api/generate``, ``/v1/completions``) costs nothing to push out, nor does a
conversation taken to have ended (:data:`ganglion.prefixes.RETURN_PERIODS`)."""
DEFAULT_OUTPUT_TOKENS = 256
MAX_OUTPUT_TOKENS = 1 << 20
"""The most output a job is taken to owe: a caller may ask for any number of tokens, but no
answer outgrows its model's context (and a float cannot hold every integer)."""
DEFAULT_LOAD_S = 5.0


def same_model(a: str, b: str) -> bool:
    """Ollama's rule: ``llama3`` and ``llama3:latest`` name the same model."""
    return a.removesuffix(":latest") == b.removesuffix(":latest")


def serves(names: list[str], model: str) -> bool:
    """Whether ``names`` has ``model`` by :func:`same_model` (most often as spelled: a
    look-up in C before the rule is tried on each)."""
    return model in names or any(same_model(model, name) for name in names)


# Job, Ticket and Estimate are built on every request (an estimate per candidate): plain
# slotted dataclasses, as a frozen one costs about five times as much to build.


@dataclass(slots=True)
class Job:
    """What the router knows of a request before it runs."""

    model: str
    prompt_tokens: int = 0
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    prompt: Prompt | None = None
    """The prompt's hash chain, for the prefix caches (None: not worth tracking)."""


@dataclass(eq=False, slots=True)
class Ticket:
    """One job admitted on one neuron (:meth:`Router.take`), until it is released."""

    job: Job
    neuron: Neuron
    started: float
    decode_tps: float
    work: float = 0.0
    """What the job owes the neuron, in output tokens: its output, and its prefill as the
    output tokens the neuron could have written in that time."""
    cached_tokens: int = 0
    """Prompt tokens the neuron was predicted to hold in its KV cache when it was chosen."""
    answer: str | None = None
    """A chat's whole answer, once written: the neuron's cache holds it after the prompt
    (set by whoever reads the answer, where :attr:`wants_answer`)."""

    @property
    def wants_answer(self) -> bool:
        return self.job.prompt is not None and self.job.prompt.conversation


IDLE = Load()


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

    def load(self) -> Load:
        """This book as the load board carries it (:mod:`ganglion.fleet.board`). Most of a
        big fleet is idle at any moment: those books share one :data:`IDLE`, as ranking
        reads every serving neuron's on each request."""
        tickets = self.tickets
        if not tickets and not self.cool_until:
            return IDLE
        oldest = tickets[0].started if tickets else 0.0  # in the order taken, by the clock
        return Load(len(tickets), self.owed, self.stamp, self.rate, oldest, self.cool_until)

    def add(self, ticket: Ticket, now: float, slots: int) -> None:
        self.owed = self._backlog(now) + ticket.work
        self.stamp, self.rate = now, slots * ticket.decode_tps
        self.tickets.append(ticket)

    def remove(self, ticket: Ticket, now: float) -> None:
        self.owed, self.stamp = self._backlog(now), now
        self.tickets.remove(ticket)
        if not self.tickets:
            self.owed = 0.0

    def _backlog(self, now: float) -> float:
        """``self.load().backlog(now)``, without building the load (twice a request)."""
        if not self.tickets:
            return 0.0
        return max(self.owed - self.rate * (now - self.stamp), 0.0)


@dataclass(slots=True)
class Estimate:
    neuron: Neuron
    finish_s: float
    wait_s: float
    decode_tps: float
    queued: int = 0
    cached_tokens: int = 0
    """Prompt tokens the neuron is predicted to hold in its KV cache."""
    saving_s: float = 0.0
    """The prefill time those cached tokens save (already left out of ``finish_s``)."""
    prefill_tps: float = 0.0
    displacing_s: float = 0.0
    """The prefill other conversations will redo because this job pushes a prompt out of the
    neuron's cache (the least recently served one, when the cache is full), counted
    :data:`DISPLACED_TURNS` times."""


class RoutingPolicy(Protocol):
    """Which neuron gets a request: the candidates ranked."""

    name: str

    def rank(self, estimates: list[Estimate]) -> list[Estimate]:
        """The candidates, best first."""
        ...


class CacheAware:
    """Earliest predicted finish time first, prefill charged only for the prompt tokens a
    neuron is not predicted to hold in its KV cache, plus the prefill a job makes another
    conversation redo by pushing its prompt out of a full cache (the default)."""

    name = "cache-aware"

    def rank(self, estimates: list[Estimate]) -> list[Estimate]:
        return sorted(
            estimates, key=lambda e: (e.finish_s + e.displacing_s, e.queued, e.neuron.name)
        )


class FinishTime:
    """Earliest predicted finish time first, as if no neuron held any prompt in its cache:
    every prompt token is charged prefill everywhere (the ranking before prefix caches were
    tracked, kept for comparison)."""

    name = "finish-time"

    def rank(self, estimates: list[Estimate]) -> list[Estimate]:
        return sorted(estimates, key=lambda e: (e.finish_s + e.saving_s, e.queued, e.neuron.name))


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


for _policy in (CacheAware, FinishTime, LeastBusy, RoundRobin):
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
        cache_slots: int = 0,
        clock: Callable[[], float] = time.monotonic,
        board: Board | None = None,
    ) -> None:
        """``cache_slots``: the prompts each neuron is taken to hold per model in its KV
        cache (0: as many as it has slots). ``board``: the load shared with the other
        workers of ``serve --workers`` (:mod:`ganglion.fleet.board`)."""
        self.registry = registry
        self.board = board
        self.policy = policy or CacheAware()
        self.cooldown_s = cooldown_s
        self.max_queue = max_queue
        self.cache_slots = cache_slots
        self.clock = clock
        self._books: dict[str, Book] = {}
        self._prefixes: dict[tuple[str, str], PrefixIndex] = {}

    def book(self, neuron: Neuron) -> Book:
        book = self._books.get(neuron.name)
        if book is None:
            book = self._books[neuron.name] = Book()
        return book

    def serving(self, model: str) -> list[Neuron]:
        """Active neurons that serve ``model``."""
        return [n for n in self.registry.neurons() if n.is_active and serves(n.models, model)]

    def load(self, neuron: Neuron) -> Load:
        """The jobs on ``neuron`` from the whole gateway: this process's book and, under
        ``serve --workers``, the other workers' (:mod:`ganglion.fleet.board`)."""
        mine = self.book(neuron).load()
        others = self.board.others(neuron.id) if self.board is not None else None
        if not others:
            return mine
        every = [mine, *others]
        now = self.clock()
        return Load(
            jobs=sum(load.jobs for load in every),
            owed=sum(load.backlog(now) for load in every),
            stamp=now,
            rate=max(load.rate for load in every),
            oldest=min((load.oldest for load in every if load.jobs), default=0.0),
            cool_until=max(load.cool_until for load in every),
        )

    def full(self, neuron: Neuron, load: Load | None = None) -> bool:
        """A neuron's queue is bounded: ``slots`` running plus ``max_queue`` waiting."""
        jobs = (load or self.load(neuron)).jobs
        return jobs >= neuron.slots + self.max_queue

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

    def estimate(
        self, neuron: Neuron, job: Job, load: Load | None = None, typical: float | None = None
    ) -> Estimate:
        now = self.clock()
        model = job.model
        decode = _speed(neuron, model) or (
            typical if typical is not None else self.typical_tps(model)
        )
        load = load or self.load(neuron)
        busy = load.jobs >= neuron.slots
        wait = load.backlog(now) / (neuron.slots * decode) if busy else 0.0
        reading = _measured(neuron.speeds.prefill, model) or decode * PREFILL_FACTOR
        loaded = neuron.loaded
        cold = loaded is not None and not serves(loaded, model)
        cached, displaced = self._cache(neuron, job, now)
        cached = 0 if cold else min(cached, job.prompt_tokens)
        prefill = (job.prompt_tokens - cached) / reading
        loading = 0.0
        if cold:
            # Not loaded: this job loads the model, or waits for the load already under way
            # (started with the neuron's oldest job in flight): it holds up the queue too.
            loading = _measured(neuron.speeds.loads, model) or DEFAULT_LOAD_S
            if load.jobs:
                loading = max(loading - (now - load.oldest), 0.0)
        finish = wait + prefill + job.output_tokens / decode + loading
        return Estimate(
            neuron,
            finish,
            wait,
            decode,
            load.jobs,
            cached,
            cached / reading,
            reading,
            DISPLACED_TURNS * displaced / reading,
        )

    def cached_tokens(self, neuron: Neuron, job: Job) -> int:
        """The tokens of ``job``'s prompt ``neuron`` is predicted to hold in its KV cache."""
        return self._cache(neuron, job, self.clock())[0]

    def _cache(self, neuron: Neuron, job: Job, now: float) -> tuple[int, int]:
        """What ``neuron``'s cache is predicted to hold of ``job``'s prompt, and the tokens
        of the prompt that serving it there would push out."""
        if job.prompt is None:
            return 0, 0
        held = self._prefixes.get((neuron.name, job.model.removesuffix(":latest")))
        if held is None:
            return 0, 0
        return held.predict(job.prompt, now)

    def remember(self, neuron: Neuron, job: Job, now: float | None = None) -> None:
        """``neuron`` will read ``job``'s prompt: it holds it in its cache from then on.

        Called when the job is admitted, not when it is read: a neuron serves its queue in
        order, so the index is what the neuron will hold once the jobs ahead of the next one
        are read, which is what the next one will find there."""
        if job.prompt is None:
            return
        key = (neuron.name, job.model.removesuffix(":latest"))
        held = self._prefixes.get(key)
        if held is None:
            held = self._prefixes[key] = PrefixIndex(self.cache_slots or neuron.slots)
        held.remember(job.prompt, self.clock() if now is None else now)

    def _answered(self, neuron: Neuron, job: Job, answer: str | None, now: float) -> None:
        """``job``'s answer on ``neuron`` ended: its conversation's next turn is due, and
        finds the ``answer`` (if the whole one was read) in the cache after the prompt."""
        if job.prompt is None:
            return
        held = self._prefixes.get((neuron.name, job.model.removesuffix(":latest")))
        if held is not None:
            held.answered(job.prompt, now, answer)

    def forget(self, neuron: Neuron) -> None:
        """Drop what ``neuron`` is predicted to hold: it failed, and may have restarted."""
        for key in [key for key in self._prefixes if key[0] == neuron.name]:
            del self._prefixes[key]

    def rank(self, job: Job, *, pinned: str | None = None) -> list[Estimate]:
        """Candidates for ``job``, best first: neurons cooling down and full ones go last
        (full ones not at all); a pinned neuron is the only candidate."""
        if pinned is not None:
            return [self.estimate(self._pinned(pinned, job.model), job)]
        now = self.clock()
        serving = self.serving(job.model)
        typical = self.typical_tps(job.model, serving)
        loads = {n.name: self.load(n) for n in serving}
        open_ = [n for n in serving if not self.full(n, loads[n.name])]
        ranked = self.policy.rank([self.estimate(n, job, loads[n.name], typical) for n in open_])
        warm = [e for e in ranked if loads[e.neuron.name].cool_until <= now]
        cooling = [e for e in ranked if loads[e.neuron.name].cool_until > now]
        return warm + cooling

    def _pinned(self, name: str, model: str) -> Neuron:
        """The neuron a caller asked for by name, if it can take the job."""
        neuron = self.registry.get(name)
        if not neuron.is_active:
            raise PinnedUnavailable(
                f"neuron {name!r} is {neuron.status}: {neuron.reason}; resume it, or send the "
                "request without the X-Ganglion-Neuron header"
            )
        if not serves(neuron.models, model):
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
            self.load(n).backlog(now) / (n.slots * self.decode_tps(n, model, typical))
            for n in serving
        ]
        return max(1.0, min(waits, default=5.0))

    def cool_down(self, neuron: Neuron) -> None:
        self.book(neuron).cool_until = self.clock() + self.cooldown_s
        self.forget(neuron)
        self._publish(neuron)

    def warm_up(self, neuron: Neuron) -> None:
        book = self.book(neuron)
        if book.cool_until:
            book.cool_until = 0.0
            self._publish(neuron)

    @contextmanager
    def admit(self, estimate: Estimate, job: Job) -> Iterator[Ticket]:
        """Count ``job`` against its neuron's backlog while it runs; its prompt is held in the
        neuron's cache from now on (:meth:`remember`). :meth:`take` and :meth:`release`, as a
        block."""
        ticket = self.take(estimate, job)
        try:
            yield ticket
        finally:
            self.release(ticket)

    def take(self, estimate: Estimate, job: Job) -> Ticket:
        """Count ``job`` against ``estimate``'s neuron until :meth:`release`."""
        neuron = estimate.neuron
        work = float(job.output_tokens)
        if estimate.prefill_tps > 0:
            unread = job.prompt_tokens - estimate.cached_tokens
            work += unread * estimate.decode_tps / estimate.prefill_tps
        now = self.clock()
        ticket = Ticket(job, neuron, now, estimate.decode_tps, work, estimate.cached_tokens)
        self.remember(neuron, job, now)
        self.book(neuron).add(ticket, now, neuron.slots)
        self._publish(neuron)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """``ticket``'s job ended (or failed): its neuron owes it nothing more."""
        neuron, now = ticket.neuron, self.clock()
        self._answered(neuron, ticket.job, ticket.answer, now)
        self.book(neuron).remove(ticket, now)
        self._publish(neuron)

    def _publish(self, neuron: Neuron) -> None:
        if self.board is not None:
            self.board.publish(neuron.id, self.book(neuron).load())


def _speed(neuron: Neuron, model: str) -> float | None:
    """``neuron``'s measured decode speed for ``model``, as :func:`_measured` finds it in
    :meth:`ganglion.fleet.speed.SpeedBook.by_model`, read in place: every estimate reads it."""
    for name, entry in neuron.speeds.models.items():
        if entry.ewma is not None and (name == model or same_model(name, model)):
            return entry.ewma
    return None


def _measured(by_model: dict[str, float], model: str) -> float | None:
    """The figure measured for ``model`` (``llama3`` and ``llama3:latest`` alike), if any."""
    for name, value in by_model.items():
        if name == model or same_model(name, model):
            return value
    return None
