"""Sending one request into the fleet: route, fail over before the caller sees anything,
measure.

A streamed request is streamed from its neuron (:meth:`Dispatcher.open`): the first chunk
tells that the neuron is really answering, so failover happens before anything reaches the
caller; the idle timeout applies between chunks; the final chunk carries the token stats
that feed the speed estimates. A request for one JSON answer (:meth:`Dispatcher.complete`)
reaches its caller only whole, so a failure at any point fails over; it is streamed from a
candidate that has a next one to fail over to, and asked for as one body of the last (or
pinned) one, which then sends one body rather than a chunk per token. What is left to do once
a whole answer is in hand (let its slot go, record its speed) is done right after the caller
has sent it on, not before: :meth:`Dispatcher.settled` waits for it.

    dispatch ──▶ Router.rank ──▶ for each candidate: send, wait for the first chunk (or all)
                                   ├─ fails first: cool down, next one
                                   └─ answers: Stream (first chunk + the rest), or Whole

Every wait on a neuron (its first chunk, each next one, a whole answer) ends at its
timeout, or as soon as the probes find the neuron offline, whichever comes first: a cut
link or a dead host costs a request a few probe intervals, not the whole timeout. A neuron
that fails mid-answer cools down too, so the next request goes elsewhere first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ganglion.errors import (
    AllNeuronsFailed,
    BrokenMidStream,
    DispatchError,
    FleetSaturated,
    NeuronError,
    NeuronRefused,
    NeuronRequestError,
    NeuronStreamBroken,
    NeuronUnreachable,
    NoNeuronForModel,
)
from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry
from ganglion.fleet.traffic import FailureKind, RequestObserver, Silent, failure_kind
from ganglion.neurons.base import (
    ChatCall,
    Chunk,
    Completion,
    Embeddings,
    GenerateCall,
    NeuronAdapter,
    TokenStats,
    collected,
)
from ganglion.routing import Estimate, Job, Router, Ticket

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timeouts:
    """How long a neuron may be waited on: for its first chunk, between chunks, and for a
    whole answer (at least ``whole_s``, and at least the first-chunk limit plus twice the
    time the router predicts the answer to take, so a long answer on a slow neuron is not
    cut short)."""

    first_byte_s: float = 120.0
    idle_s: float = 60.0
    whole_s: float = 600.0

    def whole(self, estimate: Estimate) -> float:
        return max(self.whole_s, self.first_byte_s + 2 * estimate.finish_s)


Call = ChatCall | GenerateCall


@dataclass
class Stream:
    """An answer that has started: the neuron, its first chunk, and the rest to come."""

    neuron: Neuron
    model: str
    first: Chunk
    _rest: AsyncIterator[Chunk]
    _try: Try
    stats: TokenStats | None = field(default=None)
    cached_tokens: int = 0
    """Prompt tokens the neuron was predicted to hold in its KV cache when it was chosen."""

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._rest

    async def aclose(self) -> None:
        await self._try.release()


@dataclass(frozen=True)
class Whole:
    """A whole answer: the neuron that gave it, and the answer."""

    neuron: Neuron
    model: str
    completion: Completion
    cached_tokens: int = 0
    """Prompt tokens the neuron was predicted to hold in its KV cache when it was chosen."""


class Try:
    """One try on one neuron: its estimate; its ticket, the slot it holds (where a chat's
    answer goes once read: the neuron's cache holds it); the watch on its waits; whether it
    is the ``final`` try (pinned, or the last candidate); and the streams it opened.
    :meth:`release` lets go of all it holds, last taken first.

    (A plain class rather than an ``AsyncExitStack`` of context managers: this is every
    request's bookkeeping, and the stack's generic machinery cost more than the work.)"""

    def __init__(
        self, dispatcher: Dispatcher, estimate: Estimate, ticket: Ticket, watch: Watch, final: bool
    ) -> None:
        self.estimate = estimate
        self.ticket = ticket
        self.watch = watch
        self.final = final
        self._dispatcher: Dispatcher | None = dispatcher  # None once released
        self._streams: list[AsyncIterator[Chunk]] = []

    def opened(self, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """``stream``, closed when the try is released."""
        self._streams.append(stream)
        return stream

    async def release(self) -> None:
        """Close the streams, the watch, the neuron's in-flight count and the slot; only the
        first call does anything."""
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None:
            return
        try:
            for stream in reversed(self._streams):
                await _close(stream)
        finally:
            self.watch.close()
            dispatcher.registry.ended(self.estimate.neuron)
            dispatcher.router.release(self.ticket)


#: What a try does: start the answer (or get it whole).
Attempt = Callable[[Try], Awaitable[T]]


def stream_of(adapter: NeuronAdapter, request: Call) -> AsyncIterator[Chunk]:
    """``request``'s answer, streamed."""
    if isinstance(request, ChatCall):
        return adapter.chat_stream(request)
    return adapter.generate_stream(request)


def ask_whole(adapter: NeuronAdapter, request: Call) -> Coroutine[Any, Any, Completion]:
    """``request``'s answer, whole: asked for as one body when the neuron's whole answers say
    what they cost (Ollama, llama.cpp's server); else streamed and put together, so that the
    speed estimates still learn its decode speed (``NeuronAdapter.times_whole_answers``)."""
    if not adapter.times_whole_answers:
        return collected(stream_of(adapter, request), request.model)
    if isinstance(request, ChatCall):
        return adapter.chat(request)
    return adapter.generate(request)


class Dispatcher:
    def __init__(
        self,
        registry: Registry,
        router: Router,
        *,
        timeouts: Timeouts | None = None,
        max_attempts: int = 3,
        observer: RequestObserver | None = None,
    ) -> None:
        self.registry = registry
        self.router = router
        self.timeouts = timeouts or Timeouts()
        self.max_attempts = max_attempts
        self.observer: RequestObserver = observer or Silent()
        self.watches = Watches()
        self._settling: set[asyncio.Task[None]] = set()  # bounded by the answers in flight

    async def open(
        self, job: Job, request: Call, *, endpoint: str, pinned: str | None = None
    ) -> Stream:
        """Start the answer on the best neuron that really answers; fail over before that."""

        async def start(attempt: Try) -> Stream:
            neuron, watch = attempt.estimate.neuron, attempt.watch
            stream = attempt.opened(stream_of(neuron.adapter, request))
            first = await watch.next(stream)
            watch.timeout_s = self.timeouts.idle_s
            rest = self._rest(job.model, endpoint, first, stream, attempt)
            cached = attempt.ticket.cached_tokens
            return Stream(neuron, job.model, first, rest, attempt, cached_tokens=cached)

        return await self._first(job, endpoint, pinned, start)

    async def complete(
        self, job: Job, request: Call, *, endpoint: str, pinned: str | None = None
    ) -> Whole:
        """The whole answer from the best neuron that gives one. The caller sees nothing
        until it is whole, so a failure at any point fails over to the next candidate.

        A candidate that can still fail over is streamed from, and its chunks put together:
        only arriving tokens tell a stalled neuron from a long answer, with the first-byte
        and idle timeouts. The last one to try (or the one pinned) has no next candidate to
        move to, so it is asked for one body, which costs the gateway one read instead of a
        chunk per token; its wait ends at :meth:`Timeouts.whole`, or when it goes offline."""

        async def ask(attempt: Try) -> Whole:
            neuron, watch, ticket = attempt.estimate.neuron, attempt.watch, attempt.ticket
            if attempt.final:
                watch.timeout_s = self.timeouts.whole(attempt.estimate)
                completion = await watch.wait(ask_whole(neuron.adapter, request))
            else:
                completion = await self._gather(neuron.adapter, request, attempt)
            if ticket.wants_answer:
                ticket.answer = completion.text
            self._after_answer(settle(attempt, completion.stats))
            return Whole(neuron, job.model, completion, ticket.cached_tokens)

        async def settle(attempt: Try, stats: TokenStats) -> None:
            neuron = attempt.estimate.neuron
            await attempt.release()
            self.observer.request_finished(neuron.name, job.model, endpoint, stats)
            await self.registry.record_success(
                neuron, job.model, stats, predicted_cached=attempt.ticket.cached_tokens
            )

        return await self._first(job, endpoint, pinned, ask)

    async def settled(self) -> None:
        """Wait until what is left of the whole answers given so far is done (their slots
        let go, their speeds recorded): at shutdown, before the store's last write."""
        while self._settling:
            await asyncio.wait(list(self._settling))

    def _after_answer(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` once the caller's task lets the loop run again: after it has sent the
        answer in hand, which takes no wait. Letting the slot go and recording the speed are
        bookkeeping the caller need not wait for: about a sixth of the gateway's own time
        for a whole answer."""
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settled_one)

    def _settled_one(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("settling an answer failed", exc_info=error)

    async def _gather(self, adapter: NeuronAdapter, request: Call, attempt: Try) -> Completion:
        """A streamed answer put together (:func:`collected`), each chunk awaited within the
        first-byte, then the idle, timeout."""
        watch = attempt.watch
        stream = attempt.opened(stream_of(adapter, request))

        async def watched() -> AsyncIterator[Chunk]:
            try:
                yield await watch.next(stream)
                watch.timeout_s = self.timeouts.idle_s
                while True:
                    yield await watch.next(stream)
            except StopAsyncIteration:  # ended early: collected() says so
                return

        return await collected(watched(), request.model)

    async def _first(self, job: Job, endpoint: str, pinned: str | None, attempt: Attempt[T]) -> T:
        """``attempt`` on the ranked candidates in turn, until one answers. Each attempt
        holds its neuron's slot (``Router.take``) and in-flight count, and is told whether
        it is the ``final`` one (pinned, or the last candidate). Its waits end at the
        watch's timeout (first-byte, until the attempt changes it) or when the neuron goes
        offline. A failure cools its neuron down and counts against its health; a 4xx that
        is the caller's fault is passed on at once."""
        ranked = self.router.rank(job, pinned=pinned)
        if not ranked:
            raise self.unavailable(job.model)
        candidates = ranked[: self.max_attempts]
        failures: list[str] = []
        for tried, estimate in enumerate(candidates, start=1):
            neuron = estimate.neuron
            final = pinned is not None or tried == len(candidates)
            ticket = self.router.take(estimate, job)
            self.registry.started(neuron)
            self.observer.request_started(neuron.name, job.model, endpoint)
            lost = self.registry.lost(neuron)
            watch = self.watches.watch(neuron.name, lost, self.timeouts.first_byte_s)
            held = Try(self, estimate, ticket, watch, final)
            try:
                answer = await attempt(held)
            except NeuronRequestError as error:
                await held.release()
                self.observer.request_failed(
                    neuron.name, job.model, endpoint, FailureKind.HTTP_ERROR
                )
                if error.status_code is not None and _callers_fault(error.status_code):
                    raise NeuronRefused(str(error), error.status_code) from None
                failures.append(await self._failed(neuron, error, watch.timeout_s))
            except (NeuronError, TimeoutError, StopAsyncIteration) as error:
                await held.release()
                self.observer.request_failed(neuron.name, job.model, endpoint, failure_kind(error))
                failures.append(await self._failed(neuron, error, watch.timeout_s))
            except BaseException:  # the caller went away before the answer
                await held.release()
                self.observer.request_failed(
                    neuron.name, job.model, endpoint, FailureKind.STREAM_BROKEN
                )
                raise
            else:
                self.router.warm_up(neuron)
                self.observer.prefix_predicted(neuron.name, job.model, estimate.cached_tokens)
                return answer
        raise AllNeuronsFailed(
            f"no neuron could serve {job.model!r}: "
            + "; ".join(failures)
            + " (see ganglion neuron list)"
        )

    async def embed(
        self, job: Job, inputs: list[str], pinned: str | None = None
    ) -> tuple[Neuron, Embeddings]:
        """Embed ``inputs`` on the best neuron serving ``job.model``, failing over on errors."""
        model = job.model
        ranked = self.router.rank(job, pinned=pinned)
        if not ranked:
            raise self.unavailable(model)
        failures = []
        for estimate in ranked[: self.max_attempts]:
            neuron = estimate.neuron
            try:
                async with self.registry.track(neuron):
                    return neuron, await neuron.adapter.embed(model, inputs)
            except NeuronError as error:
                failures.append(f"{neuron.name}: {error}")
        raise AllNeuronsFailed(f"no neuron could embed with {model!r}: " + "; ".join(failures))

    def unavailable(self, model: str) -> DispatchError:
        """Why nothing can take a job for ``model``: saturated, or nobody serves it."""
        serving = self.router.serving(model)
        if serving:
            wait = self.router.retry_after_s(model)
            return FleetSaturated(
                f"every neuron serving {model!r} is busy (queues full); retry in {wait:.0f} s",
                retry_after_s=wait,
            )
        return NoNeuronForModel(
            f"model {model!r} is not served by any active neuron: see ganglion neuron list, "
            "or pull it on a neuron"
        )

    async def _failed(self, neuron: Neuron, error: BaseException, waited_s: float) -> str:
        reason = str(error) or (
            f"no answer within {waited_s:.0f} s"
            if isinstance(error, TimeoutError)
            else type(error).__name__
        )
        self.router.cool_down(neuron)
        await self.registry.record_failure(neuron, reason)
        return f"{neuron.name}: {reason}"

    async def _rest(
        self, model: str, endpoint: str, first: Chunk, stream: AsyncIterator[Chunk], attempt: Try
    ) -> AsyncIterator[Chunk]:
        neuron, watch, ticket = attempt.estimate.neuron, attempt.watch, attempt.ticket
        chunk = first
        ended = False
        heard = [first.text] if ticket.wants_answer else None  # the neuron's cache holds it
        try:
            while not chunk.done:
                try:
                    chunk = await watch.next(stream)
                except StopAsyncIteration:
                    raise NeuronStreamBroken(f"{neuron.name} ended its answer early") from None
                if heard is not None:
                    heard.append(chunk.text)
                yield chunk
            if heard is not None:
                ticket.answer = "".join(heard)
        except (NeuronError, TimeoutError) as error:
            ended = True
            self.observer.request_failed(neuron.name, model, endpoint, failure_kind(error))
            reason = str(error) or f"no token for {self.timeouts.idle_s:.0f} s"
            self.router.cool_down(neuron)
            await self.registry.record_failure(neuron, reason)
            raise BrokenMidStream(f"{neuron.name} failed mid-answer: {reason}") from None
        finally:
            await attempt.release()
            if not ended and not chunk.done:  # the caller went away mid-answer
                self.observer.request_failed(
                    neuron.name, model, endpoint, FailureKind.STREAM_BROKEN
                )
        stats = chunk.stats or TokenStats()
        self.observer.request_finished(neuron.name, model, endpoint, stats)
        await self.registry.record_success(
            neuron, model, stats, predicted_cached=ticket.cached_tokens
        )


class Watch:
    """The waits on one neuron's answer: each ends after ``timeout_s`` (else TimeoutError), or
    as soon as the probes find the neuron offline (NeuronUnreachable), whichever is first.

    It is set up once an answer, not once a chunk: a chunk costs a clock read. Its dispatcher's
    :class:`Watches` holds it, with every other watch, under one timer and one offline
    callback per neuron; the watch only notes when the wait under way began. Being offline
    cancels the waiting task, and the cancellation becomes NeuronUnreachable. Only the waits
    are watched: time spent handing a chunk to the caller is not the neuron's.
    """

    __slots__ = (
        "_cut",
        "_group",
        "_loop",
        "_task",
        "_watches",
        "lost",
        "name",
        "since",
        "timeout_s",
    )

    def __init__(
        self,
        watches: Watches,
        loop: asyncio.AbstractEventLoop,
        group: set[Watch],
        name: str,
        lost: asyncio.Future[str],
        timeout_s: float,
    ) -> None:
        self.name = name
        self.lost = lost
        self.timeout_s = timeout_s
        self.since: float | None = None
        """When the wait under way began (the loop's clock); None: not waiting."""
        self._watches = watches
        self._loop = loop
        self._group = group  # the watches on the same neuron, cut off together
        self._task: asyncio.Task[object] | None = None
        self._cut: str | None = None  # why this watch cancelled the waiting task

    async def next(self, stream: AsyncIterator[Chunk]) -> Chunk:
        """The stream's next chunk, within the watch's limits."""
        return await self.wait(anext(stream))

    async def wait(self, step: Awaitable[T]) -> T:
        """``step``'s result, within the watch's limits."""
        if self.lost.done():
            _discard(step)
            raise NeuronUnreachable(f"{self.name} went offline: {self.lost.result()}")
        self._task = asyncio.current_task()
        watches = self._watches
        since = self.since = self._loop.time()
        if since + self.timeout_s < watches.due:  # the timer is set for later
            watches.check_at(since + self.timeout_s)
        try:
            return await step
        except asyncio.CancelledError:
            assert self._task is not None
            if self._cut is None or self._task.uncancel() > 0:
                raise
            if self._cut == "offline":
                raise NeuronUnreachable(f"{self.name} went offline: {self.lost.result()}") from None
            raise TimeoutError from None
        finally:
            self.since = None

    def close(self) -> None:
        self._group.discard(self)

    def cut(self, why: str) -> None:
        """Cancel the wait under way, if any, for ``why`` (``timeout`` or ``offline``)."""
        if self.since is not None and self._cut is None and self._task is not None:
            self._cut = why
            self._task.cancel()


class Watches:
    """Every watch of one dispatcher: one timer for all of them, and one callback per neuron
    on its :meth:`Registry.lost <ganglion.fleet.registry.Registry.lost>` future.

    A timer and a callback of each request's own cost it about 2 % of the gateway's work on
    a whole answer (12,000 instructions, most of them the timer's). The timer is set for the
    earliest end any wait had when it was set; when it fires it cuts the waits that are over,
    and is set again for the earliest end of the waits still under way (a wait that ended
    early leaves it to fire for nothing, once). Going offline cuts every wait on that neuron
    at once. Held: the watches of the answers under way, grouped by neuron; a neuron's empty
    group is dropped when the timer fires, or when its future resolves.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the first watch
        self.due = math.inf
        """When the timer fires (the loop's clock); infinity when it is not set."""
        self._timer: asyncio.TimerHandle | None = None
        self._groups: dict[asyncio.Future[str], set[Watch]] = {}

    def watch(self, name: str, lost: asyncio.Future[str], timeout_s: float) -> Watch:
        """A new watch on the neuron ``name``, cut off when ``lost`` resolves; close it when
        the answer is done with (:meth:`Watch.close`)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # the first watch, or a new event loop (tests)
            self.loop, self.due, self._timer, self._groups = loop, math.inf, None, {}
        group = self._groups.get(lost)
        if group is None:
            group = self._groups[lost] = set()
            lost.add_done_callback(self._offline)
        watch = Watch(self, loop, group, name, lost, timeout_s)
        group.add(watch)
        return watch

    def check_at(self, due: float) -> None:
        """Have the timer fire at ``due``, sooner than it was set for."""
        assert self.loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self.due = due
        self._timer = self.loop.call_at(due, self._check)

    def _check(self) -> None:
        assert self.loop is not None
        self._timer, self.due = None, math.inf
        now = self.loop.time()
        due = math.inf
        for lost, group in list(self._groups.items()):
            if not group:
                del self._groups[lost]
                lost.remove_done_callback(self._offline)
            for watch in group:
                if watch.since is None:
                    continue
                end = watch.since + watch.timeout_s
                if end <= now:
                    watch.cut("timeout")
                else:
                    due = min(due, end)
        if due < math.inf:
            self.check_at(due)

    def _offline(self, lost: asyncio.Future[str]) -> None:
        """``lost`` resolved: cut the waits on its neuron. A watch not waiting now raises at
        its next wait's start."""
        for watch in self._groups.pop(lost, ()):
            watch.cut("offline")


def _discard(step: Awaitable[object]) -> None:
    """Close a coroutine that will not be awaited, so it is not reported as forgotten."""
    close = getattr(step, "close", None)
    if close is not None:
        close()


async def _close(stream: AsyncIterator[Chunk]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


def _callers_fault(status: int) -> bool:
    """A 4xx is the caller's to fix, except a neuron too busy (429) or too slow (408) to
    take it now: those fail over like a 5xx."""
    return 400 <= status < 500 and status not in (408, 429)
