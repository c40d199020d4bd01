"""``GET /fleet/events``: live fleet changes as server-sent events.

One client's stream::

    retry: 2000

    event: snapshot
    data: {"neurons": [LiveNeuron, ...]}

    event: neuron
    data: LiveNeuron                      (a neuron was added or changed)

    event: removed
    data: {"name": "gpu-1"}

    : keep-alive                          (after 15 s without an event)

Every change is published under a *topic* (``neuron/NAME``). Each client holds a mailbox
with only the newest event per topic, bounded in size, and is sent at most one event per
topic every ``coalesce_s``: a slow client skips stale states rather than queueing them
(if its mailbox overflows it gets a fresh snapshot), and the gateway never waits for a
client. Another kind of event (runs) shares the stream by publishing under its own topic
(``run/ID``) through :meth:`FleetEvents.publish`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from ganglion.errors import UnknownNeuron
from ganglion.fleet.model import Neuron, NeuronView
from ganglion.fleet.registry import Registry
from ganglion.fleet.speed import SpeedBook

COALESCE_S = 0.2
KEEPALIVE_S = 15.0
RETRY_MS = 2000
MAILBOX_LIMIT = 1000


class LiveNeuron(NeuronView):
    """A :class:`NeuronView` plus what the minimap draws against: the neuron's own best."""

    best_tokens_per_second: float | None


def best_speed(speeds: SpeedBook) -> float | None:
    """The neuron's own typical best: its best model's baseline (or fastest sample so far)."""
    bests = [
        entry.baseline or max(entry.samples) for entry in speeds.models.values() if entry.samples
    ]
    return round(max(bests), 2) if bests else None


def live_view(neuron: Neuron) -> LiveNeuron:
    return LiveNeuron(
        **neuron.view().model_dump(), best_tokens_per_second=best_speed(neuron.speeds)
    )


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``kind`` is its ``event:`` line, ``data`` its JSON payload."""

    kind: str
    data: Any

    def encode(self) -> str:
        return f"event: {self.kind}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n"


class Mailbox:
    """One client's pending events: the newest per topic, at most ``limit`` topics."""

    def __init__(self, limit: int = MAILBOX_LIMIT) -> None:
        self.limit = limit
        self.overflowed = False
        self._pending: dict[str, Event] = {}
        self._ready = asyncio.Event()

    def offer(self, topic: str, event: Event) -> None:
        """Never blocks: replaces an older event of the same topic, or drops them all."""
        self._pending.pop(topic, None)
        if len(self._pending) >= self.limit:
            self._pending.clear()
            self.overflowed = True
        else:
            self._pending[topic] = event
        self._ready.set()

    async def wait(self, timeout: float) -> bool:
        """Whether anything arrived within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def take(self) -> tuple[bool, list[Event]]:
        """(whether a snapshot must be resent, the pending events), emptying the mailbox."""
        overflowed, events = self.overflowed, list(self._pending.values())
        self.overflowed = False
        self._pending.clear()
        self._ready.clear()
        return overflowed, events


class FleetEvents:
    """Fans the registry's changes out to every connected client's :class:`Mailbox`."""

    def __init__(
        self,
        registry: Registry,
        *,
        coalesce_s: float = COALESCE_S,
        keepalive_s: float = KEEPALIVE_S,
        mailbox_limit: int = MAILBOX_LIMIT,
    ) -> None:
        self.registry = registry
        self.coalesce_s = coalesce_s
        self.keepalive_s = keepalive_s
        self.mailbox_limit = mailbox_limit
        self._mailboxes: set[Mailbox] = set()
        registry.subscribe(self._neuron_changed)

    @property
    def clients(self) -> int:
        return len(self._mailboxes)

    def publish(self, topic: str, event: Event) -> None:
        for mailbox in self._mailboxes:
            mailbox.offer(topic, event)

    def snapshot(self) -> Event:
        neurons = [live_view(n).model_dump(mode="json") for n in self.registry.neurons()]
        return Event("snapshot", {"neurons": neurons})

    def _neuron_changed(self, neuron: Neuron) -> None:
        if not self._mailboxes:
            return
        topic = f"neuron/{neuron.name}"
        if self._registered(neuron):
            self.publish(topic, Event("neuron", live_view(neuron).model_dump(mode="json")))
        else:
            self.publish(topic, Event("removed", {"name": neuron.name}))

    def _registered(self, neuron: Neuron) -> bool:
        try:
            return self.registry.get(neuron.name) is neuron
        except UnknownNeuron:
            return False

    async def stream(self) -> AsyncIterator[str]:
        """The text of one client's stream. Starlette cancels it when the client goes."""
        mailbox = Mailbox(self.mailbox_limit)
        self._mailboxes.add(mailbox)
        try:
            yield f"retry: {RETRY_MS}\n\n" + self.snapshot().encode()
            while True:
                if not await mailbox.wait(self.keepalive_s):
                    yield ": keep-alive\n\n"
                    continue
                resync, events = mailbox.take()
                if resync:
                    yield self.snapshot().encode()
                else:
                    yield "".join(event.encode() for event in events)
                await asyncio.sleep(self.coalesce_s)
        finally:
            self._mailboxes.discard(mailbox)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan, once the registry exists."""
    app.state.fleet_events = FleetEvents(app.state.gateway.registry)
    yield


def _hub(request: Request) -> FleetEvents:
    hub: FleetEvents = request.app.state.fleet_events
    return hub


EventsDep = Annotated[FleetEvents, Depends(_hub)]

router = APIRouter(prefix="/fleet", tags=["monitor"], lifespan=lifespan)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An SSE stream"}},
)
async def fleet_events(hub: EventsDep) -> StreamingResponse:
    """Live fleet changes: a ``snapshot``, then ``neuron`` and ``removed`` events."""
    return StreamingResponse(
        hub.stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
