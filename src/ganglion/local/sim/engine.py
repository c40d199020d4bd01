"""The simulator's timing model: slots, queueing, model load, prefill, paced decode, faults.

A :class:`Simulator` knows nothing of HTTP. The dialects (:mod:`ganglion.local.sim.ollama`,
:mod:`ganglion.local.sim.openai`)
turn a request into a :class:`Generation`, iterate :meth:`Simulator.run` for its tokens, and read
the job's :class:`GenerationTimings` when it ends.

The model, per request::

    wait for a slot (FIFO)  ->  load the model (once per model)  ->  prefill the prompt
    (only past its longest prefix in the prompt cache, with ``--cache-slots``)
    ->  decode, k streams decoding at once each at min(tps, aggregate_tps / k) (the cache
    then holds the prompt and the answer written after it)
    ->  (a stalled job: after ``stall_after`` tokens, hold the slot and send nothing more)

Time comes from an injected ``clock`` and ``sleep`` (the real process uses
``time.monotonic`` and ``asyncio.sleep``), randomness from an injected ``random.Random``,
so tests drive it in virtual time.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from ganglion.clock import utcnow
from ganglion.local.sim.config import SimConfig
from ganglion.prefixes import CacheSlots
from ganglion.wire import ollama as wire

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
WallClock = Callable[[], datetime]
Fault = Literal["fail", "hang", "stall"]

TICK_S = 0.03
"""Tokens are emitted in batches about this far apart, so high rates cost few wake-ups. The
first token comes alone, as soon as it is written: a batch would add up to a tick to the
time to first token, which a real server does not."""

LOG_LIMIT = 100_000
"""The request log keeps this many most recent entries (the totals count them all)."""


def canonical(model: str) -> str:
    """Ollama's spelling of a model name: a tag is implied, ``llama3`` is ``llama3:latest``."""
    return model if ":" in model else f"{model}:latest"


@dataclass
class GenerationTimings:
    """Where one request's time went, in seconds, as Ollama reports it."""

    total_s: float = 0.0
    load_s: float = 0.0
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    eval_count: int = 0
    eval_s: float = 0.0
    cached_tokens: int = 0
    """Of ``prompt_tokens``, those found in the prompt cache (not read again)."""

    def ending(self, done_reason: str) -> wire.Ending:
        """The fields that close Ollama's ``/api/chat`` and ``/api/generate`` answers."""
        return wire.ending(
            done_reason,
            total_s=self.total_s,
            load_s=self.load_s,
            prompt_tokens=self.prompt_tokens,
            prompt_s=self.prompt_s,
            eval_count=self.eval_count,
            eval_s=self.eval_s,
            cached_tokens=self.cached_tokens or None,
        )


@dataclass
class Generation:
    """One generation: what to emit, and (once :meth:`Simulator.run` ends) how long it took."""

    model: str
    prompt_tokens: int
    pieces: list[str]
    done_reason: str = "stop"
    stall_after: int | None = None
    """Stall after this many tokens (``--stall-rate``): never finish, until the client leaves."""
    timings: GenerationTimings | None = None
    prompt: list[str] | None = None
    """The prompt's tokens (words), for the prompt cache."""


@dataclass
class Totals:
    requests: int = 0
    generations: int = 0
    completed: int = 0
    failed: int = 0
    hung: int = 0
    stalled: int = 0
    embeddings: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


def common_prefix(a: list[str], b: list[str]) -> int:
    """The length of the longest common prefix of ``a`` and ``b`` (slices compared in C,
    halving the range: long prompts cost microseconds)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while low < high:  # a[:low] == b[:low], a[:high] != b[:high] (high: an upper bound)
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class Simulator:
    """The shared state of one simulated neuron: its slots, loaded models, log and totals."""

    def __init__(
        self,
        config: SimConfig,
        *,
        clock: Clock,
        sleep: Sleep,
        rng: random.Random,
        wall: WallClock = utcnow,
    ) -> None:
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.wall = wall
        self.models = {canonical(name): name for name in config.models}
        self.loaded: dict[str, datetime] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.totals = Totals()
        self.queued = 0
        self.active = 0
        self.decoding = 0
        self.hanging = 0
        self.stalled = 0
        self._slots = asyncio.Semaphore(config.slots)
        self.prompt_cache = CacheSlots(config.cache_slots, common_prefix)
        """The prompts read lately (``--cache-slots``): a prompt that starts with one is
        read only past it, as llama.cpp and Ollama reuse the slot with the longest match."""
        self._load_locks: dict[str, asyncio.Lock] = {}

    # -- bookkeeping ----------------------------------------------------------------------

    def record(self, method: str, path: str) -> dict[str, Any]:
        """Append a request to the log; the dialect fills in ``model`` once it has read it."""
        entry: dict[str, Any] = {
            "time": self.wall().isoformat(),
            "method": method,
            "path": path,
            "model": None,
        }
        self.log.append(entry)
        self.totals.requests += 1
        return entry

    def resolve(self, name: object) -> str | None:
        """The served model's canonical name for a requested ``name``, or None if not served."""
        if not isinstance(name, str) or not name:
            return None
        key = canonical(name)
        return key if key in self.models else None

    def draw_fault(self) -> Fault | None:
        """Decide, with the seeded generator, whether this generation fails, hangs or stalls."""
        self.totals.generations += 1
        draw = self.rng.random()
        if draw < self.config.fail_rate:
            self.totals.failed += 1
            return "fail"
        if draw < self.config.fail_rate + self.config.hang_rate:
            self.totals.hung += 1
            return "hang"
        if draw < self.config.fail_rate + self.config.hang_rate + self.config.stall_rate:
            self.totals.stalled += 1
            return "stall"
        return None

    def stream_rate(self) -> float:
        """The decode rate of one stream now, shared out of the aggregate."""
        share = self.config.aggregate_rate / max(1, self.decoding)
        return min(self.config.tps, share)

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "config": self.config.public(),
            "in_flight": self.queued + self.active + self.hanging,
            "queued": self.queued,
            "active": self.active,
            "decoding": self.decoding,
            "hanging": self.hanging,
            "stalled": self.stalled,
            "stream_rate": self.stream_rate(),
            "loaded": sorted(self.loaded),
            "totals": asdict(self.totals),
        }

    # -- the timing model -----------------------------------------------------------------

    async def run(self, job: Generation) -> AsyncGenerator[list[str], None]:
        """Queue for a slot, load, prefill, then yield ``job.pieces`` in batches at the rate.

        ``job.timings`` is filled in as it goes, and complete once the iteration ends. A job
        with ``stall_after`` set yields that many pieces, then waits, holding its slot, until
        it is closed or cancelled (the client hung up): it never ends by itself.
        """
        timings = job.timings = GenerationTimings(prompt_tokens=job.prompt_tokens)
        start = self.clock()
        self.queued += 1
        waiting = True
        try:
            async with self._slots:
                self.queued -= 1
                waiting = False
                self.active += 1
                try:
                    timings.load_s = await self._ensure_loaded(job.model)
                    timings.prompt_s = await self._read_prompt(job, timings)
                    pieces = job.pieces[: job.stall_after]  # all of them unless stalling
                    try:
                        async with aclosing(self._decode(pieces, timings)) as batches:
                            async for batch in batches:
                                yield batch
                    finally:
                        self._hold_answer(job, pieces[: timings.eval_count])
                    if job.stall_after is not None:
                        await self._stall()
                finally:
                    self.active -= 1
        finally:
            if waiting:
                self.queued -= 1
        timings.total_s = self.clock() - start
        self.totals.completed += 1

    async def warm(self, model: str, prompt_tokens: int) -> GenerationTimings:
        """An embedding request: load if needed and read the input at the prefill rate."""
        start = self.clock()
        self.totals.embeddings += 1
        timings = GenerationTimings(prompt_tokens=prompt_tokens)
        timings.load_s = await self._ensure_loaded(model)
        timings.prompt_s = await self._prefill(prompt_tokens)
        timings.total_s = self.clock() - start
        return timings

    async def _ensure_loaded(self, model: str) -> float:
        start = self.clock()
        if model not in self.loaded:
            async with self._load_locks.setdefault(model, asyncio.Lock()):
                if model not in self.loaded:
                    await self.sleep(self.config.load_s)
                    self.loaded[model] = self.wall()
        return self.clock() - start

    async def _read_prompt(self, job: Generation, timings: GenerationTimings) -> float:
        """Prefill ``job``'s prompt past what the prompt cache holds of it, then hold it."""
        if job.prompt is None or not self.config.cache_slots:
            return await self._prefill(job.prompt_tokens)
        cached = min(self.prompt_cache.longest(job.prompt), job.prompt_tokens)
        timings.cached_tokens = cached
        self.totals.cached_tokens += cached
        seconds = await self._prefill(job.prompt_tokens - cached)
        self.prompt_cache.remember(job.prompt)
        return seconds

    def _hold_answer(self, job: Generation, written: list[str]) -> None:
        """The slot holds the answer it wrote after the prompt, as llama.cpp's and Ollama's
        do: the next turn, which repeats that answer, reads neither again."""
        if job.prompt is not None and self.config.cache_slots and written:
            self.prompt_cache.grow(job.prompt, job.prompt + "".join(written).split())

    async def _prefill(self, prompt_tokens: int) -> float:
        start = self.clock()
        self.totals.prompt_tokens += prompt_tokens
        if prompt_tokens:
            await self.sleep(prompt_tokens / self.config.prefill_rate)
        return self.clock() - start

    async def _stall(self) -> None:
        """Send nothing, ever: only cancelling the request (the client leaving) ends this."""
        self.stalled += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.stalled -= 1

    async def _decode(
        self, pieces: list[str], timings: GenerationTimings
    ) -> AsyncGenerator[list[str], None]:
        """Emit the pieces paced against absolute due times, so sleep overshoot cannot drift."""
        self.decoding += 1
        start = due = self.clock()
        try:
            while timings.eval_count < len(pieces):
                sent = timings.eval_count
                rate = self.stream_rate()
                batch = max(1, int(rate * TICK_S)) if sent else 1
                count = min(batch, len(pieces) - sent)
                due += count / rate
                delay = due - self.clock()
                if delay > 0:
                    await self.sleep(delay)
                timings.eval_count += count
                timings.eval_s = self.clock() - start
                self.totals.output_tokens += count
                yield pieces[sent : sent + count]
        finally:
            self.decoding -= 1
