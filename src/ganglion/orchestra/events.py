"""Progress of runs, for server-sent events: each run keeps its history, so a late
subscriber sees everything from the start; listeners see every run's events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]


class RunEvents:
    def __init__(self) -> None:
        self._history: dict[str, list[Event]] = {}
        self._waiters: dict[str, list[asyncio.Queue[Event]]] = {}
        self._listeners: list[Callable[[str, Event], None]] = []

    def listen(self, listener: Callable[[str, Event], None]) -> None:
        """Call ``listener(run_id, event)`` for every event of every run."""
        self._listeners.append(listener)

    def publish(self, run_id: str, event: Event) -> None:
        self._history.setdefault(run_id, []).append(event)
        for queue in self._waiters.get(run_id, []):
            queue.put_nowait(event)
        for listener in self._listeners:
            listener(run_id, event)

    def forget(self, run_id: str) -> None:
        self._history.pop(run_id, None)

    async def follow(self, run_id: str) -> AsyncIterator[Event]:
        """Every event of ``run_id`` so far, then new ones, until its ``done`` event."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        for event in self._history.get(run_id, []):
            queue.put_nowait(event)
        self._waiters.setdefault(run_id, []).append(queue)
        try:
            while True:
                event = await queue.get()
                yield event
                if event["type"] == "done":
                    return
        finally:
            self._waiters[run_id].remove(queue)
