"""Sending one request into the fleet: route, fail over before the first byte, measure.

The gateway always *streams* from neurons, whatever the caller asked: the first chunk tells
that the neuron is really answering (so failover can happen before anything reaches the
caller), timeouts apply between chunks, and the final chunk carries the token stats that
feed the speed estimates. Callers that asked for one JSON answer get the chunks collected.

    dispatch ──▶ Router.rank ──▶ for each candidate: open stream, wait for the first chunk
                                   ├─ fails before the first chunk: cool down, next one
                                   └─ answers: Stream (first chunk + the rest, measured)

Every wait on a neuron (its first chunk, each next one) ends at its timeout, or as soon as
the probes find the neuron offline, whichever comes first: a cut link or a dead host costs
a request a few probe intervals, not the whole timeout. A neuron that fails mid-answer
cools down too, so the next request goes elsewhere first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

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
from ganglion.neurons.base import Chunk, Embeddings, NeuronAdapter, TokenStats
from ganglion.routing import Job, Router, Ticket


@dataclass(frozen=True)
class Timeouts:
    first_byte_s: float = 120.0
    idle_s: float = 60.0


StreamFactory = Callable[[NeuronAdapter], AsyncIterator[Chunk]]


@dataclass
class Stream:
    """An answer that has started: the neuron, its first chunk, and the rest to come."""

    neuron: Neuron
    model: str
    first: Chunk
    _rest: AsyncIterator[Chunk]
    _stack: contextlib.AsyncExitStack
    stats: TokenStats | None = field(default=None)
    cached_tokens: int = 0
    """Prompt tokens the neuron was predicted to hold in its KV cache when it was chosen."""

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._rest

    async def collect(self) -> tuple[str, Chunk]:
        """The whole text and the final chunk."""
        parts = [self.first.text]
        last = self.first
        async for chunk in self:
            parts.append(chunk.text)
            last = chunk
        return "".join(parts), last

    async def aclose(self) -> None:
        await self._stack.aclose()


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

    async def open(
        self, job: Job, make: StreamFactory, *, endpoint: str, pinned: str | None = None
    ) -> Stream:
        """Start the answer on the best neuron that really answers; fail over before that."""
        ranked = self.router.rank(job, pinned=pinned)
        if not ranked:
            raise self.unavailable(job.model)
        failures: list[str] = []
        for estimate in ranked[: self.max_attempts]:
            neuron = estimate.neuron
            stack = contextlib.AsyncExitStack()
            ticket = stack.enter_context(self.router.admit(estimate, job))
            await stack.enter_async_context(self.registry.track(neuron))
            self.observer.request_started(neuron.name, job.model, endpoint)
            stream = make(neuron.adapter)
            stack.push_async_callback(_close, stream)
            watch = Watch(neuron.name, self.registry.lost(neuron), self.timeouts.first_byte_s)
            stack.callback(watch.close)
            try:
                first = await watch.next(stream)
            except NeuronRequestError as error:
                await stack.aclose()
                self.observer.request_failed(
                    neuron.name, job.model, endpoint, FailureKind.HTTP_ERROR
                )
                if error.status_code is not None and _callers_fault(error.status_code):
                    raise NeuronRefused(str(error), error.status_code) from None
                failures.append(await self._failed(neuron, error))
            except (NeuronError, TimeoutError, StopAsyncIteration) as error:
                await stack.aclose()
                self.observer.request_failed(neuron.name, job.model, endpoint, failure_kind(error))
                failures.append(await self._failed(neuron, error))
            except BaseException:  # the caller went away before the first token
                await stack.aclose()
                self.observer.request_failed(
                    neuron.name, job.model, endpoint, FailureKind.STREAM_BROKEN
                )
                raise
            else:
                self.router.warm_up(neuron)
                watch.timeout_s = self.timeouts.idle_s
                cached = estimate.cached_tokens
                self.observer.prefix_predicted(neuron.name, job.model, cached)
                rest = self._rest(neuron, job.model, endpoint, first, watch, stream, stack, ticket)
                return Stream(neuron, job.model, first, rest, stack, cached_tokens=cached)
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

    async def _failed(self, neuron: Neuron, error: BaseException) -> str:
        reason = str(error) or (
            f"no first token within {self.timeouts.first_byte_s:.0f} s"
            if isinstance(error, TimeoutError)
            else type(error).__name__
        )
        self.router.cool_down(neuron)
        await self.registry.record_failure(neuron, reason)
        return f"{neuron.name}: {reason}"

    async def _rest(
        self,
        neuron: Neuron,
        model: str,
        endpoint: str,
        first: Chunk,
        watch: Watch,
        stream: AsyncIterator[Chunk],
        stack: contextlib.AsyncExitStack,
        ticket: Ticket,
    ) -> AsyncIterator[Chunk]:
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
            await stack.aclose()
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

    It is set up once an answer, not once a chunk: a chunk costs a clock read, where a timeout
    and a callback of its own cost a chunk more than the rest of the gateway's work on it. One
    timer checks the wait under way; being offline cancels the waiting task, and the
    cancellation becomes NeuronUnreachable. Only the waits are watched: time spent handing a
    chunk to the caller is not the neuron's.
    """

    def __init__(self, name: str, lost: asyncio.Future[str], timeout_s: float) -> None:
        self.name = name
        self.lost = lost
        self.timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._since: float | None = None  # when the wait under way began; None: not waiting
        self._cut: str | None = None  # why this watch cancelled the waiting task
        self._timer: asyncio.TimerHandle | None = None
        lost.add_done_callback(self._offline)

    async def next(self, stream: AsyncIterator[Chunk]) -> Chunk:
        """The stream's next chunk, within the watch's limits."""
        if self.lost.done():
            raise NeuronUnreachable(f"{self.name} went offline: {self.lost.result()}")
        self._task = asyncio.current_task()
        self._since = self._loop.time()
        due = self._since + self.timeout_s
        if self._timer is None or self._timer.when() > due:  # none yet, or the limit shrank
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(due, self._check)
        try:
            return await anext(stream)
        except asyncio.CancelledError:
            assert self._task is not None
            if self._cut is None or self._task.uncancel() > 0:
                raise
            if self._cut == "offline":
                raise NeuronUnreachable(f"{self.name} went offline: {self.lost.result()}") from None
            raise TimeoutError from None
        finally:
            self._since = None

    def close(self) -> None:
        self.lost.remove_done_callback(self._offline)
        if self._timer is not None:
            self._timer.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        if self._since is not None and now >= self._since + self.timeout_s:
            self._cancel("timeout")
            return
        due = now if self._since is None else self._since
        self._timer = self._loop.call_at(due + self.timeout_s, self._check)

    def _offline(self, _: asyncio.Future[str]) -> None:
        if self._since is not None:  # not waiting: the next wait raises at its start
            self._cancel("offline")

    def _cancel(self, why: str) -> None:
        if self._cut is None and self._task is not None:
            self._cut = why
            self._task.cancel()


async def _close(stream: AsyncIterator[Chunk]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


def _callers_fault(status: int) -> bool:
    """A 4xx is the caller's to fix, except a neuron too busy (429) or too slow (408) to
    take it now: those fail over like a 5xx."""
    return 400 <= status < 500 and status not in (408, 429)
