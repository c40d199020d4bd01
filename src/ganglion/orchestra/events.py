"""Progress of runs, for server-sent events; listeners see every run's events.

A running run keeps its history, so a subscriber joining mid-run sees every event from the
start (the answer so far included). Its ``done`` event drops the history: each subscriber
already holds the events it has still to read in its own queue, released as it reads them,
and a finished run is answered from the store (``GET /fleet/runs/{id}/events`` sends one
``done`` built from the record).

A run that stops here without a ``done`` (another replica took it over), or an event
published after one, would leave a history behind; as a safety net at most
:data:`MAX_RUNS` histories are kept, and one without an event for :data:`IDLE_S` seconds
is dropped, the least recently active first. A run that loses its history to the safety net
goes on; a subscriber joining it then misses only the events before.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

MAX_RUNS = 1000  # histories kept at most: far more runs than a fleet carries at once
IDLE_S = 3600.0  # a history with no event for this long is dropped


@dataclass
class _History:
    last: float  # when its newest event came, on the clock of RunEvents
    events: list[Event] = field(default_factory=list)


class RunEvents:
    def __init__(
        self,
        *,
        max_runs: int = MAX_RUNS,
        idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_runs = max_runs
        self.idle_s = idle_s
        self.clock = clock
        self._history: OrderedDict[str, _History] = OrderedDict()  # least recently active first
        self._waiters: dict[str, list[asyncio.Queue[Event]]] = {}
        self._listeners: list[Callable[[str, Event], None]] = []

    @property
    def runs(self) -> int:
        """How many runs' histories are kept."""
        return len(self._history)

    @property
    def readers(self) -> int:
        """How many subscriptions are open."""
        return sum(len(queues) for queues in self._waiters.values())

    def listen(self, listener: Callable[[str, Event], None]) -> None:
        """Call ``listener(run_id, event)`` for every event of every run."""
        self._listeners.append(listener)

    def publish(self, run_id: str, event: Event) -> None:
        self._keep(run_id, event)
        for queue in self._waiters.get(run_id, []):
            queue.put_nowait(event)
        for listener in self._listeners:
            listener(run_id, event)

    def forget(self, run_id: str) -> None:
        self._history.pop(run_id, None)

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[AsyncIterator[Event]]:
        """Every event of ``run_id`` so far, then new ones, until its ``done`` event.

        The subscription counts from the moment this is entered, before the first read: a
        ``done`` published after that is never missed. One published before it is gone with
        the history: read the run's record then, to tell a finished run."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        history = self._history.get(run_id)
        for event in history.events if history else []:
            queue.put_nowait(event)
        self._waiters.setdefault(run_id, []).append(queue)
        try:
            yield _until_done(queue)
        finally:
            waiters = self._waiters[run_id]
            waiters.remove(queue)
            if not waiters:
                del self._waiters[run_id]

    def _keep(self, run_id: str, event: Event) -> None:
        if event["type"] == "done":
            self.forget(run_id)
            return
        now = self.clock()
        history = self._history.get(run_id)
        if history is None:
            history = self._history[run_id] = _History(now)
        else:
            history.last = now
            self._history.move_to_end(run_id)
        history.events.append(event)
        self._trim(now)

    def _trim(self, now: float) -> None:
        """Drop the least recently active histories beyond the bounds."""
        while self._history:
            oldest = next(iter(self._history.values()))
            if len(self._history) <= self.max_runs and now - oldest.last <= self.idle_s:
                return
            self._history.popitem(last=False)


async def _until_done(queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
    while True:
        event = await queue.get()
        yield event
        if event["type"] == "done":
            return
