"""``GET /fleet/events``: live fleet changes as server-sent events.

One client's stream::

    retry: 2000

    event: snapshot
    data: {"neurons": [LiveNeuron, ...]}

    event: neuron
    data: LiveNeuron                      (a neuron was added or changed)

    event: removed
    data: {"name": "gpu-1"}

    event: run
    data: RunView                         (a run started, or it or a delegation changed)

    : keep-alive                          (after 15 s without an event)

Every change is published under a *topic* (``neuron/NAME``). Each client holds a mailbox
with only the newest event per topic, bounded in size, and is sent at most one event per
topic every ``coalesce_s``: a slow client skips stale states rather than queueing them
(if its mailbox overflows it gets a fresh snapshot), and the gateway never waits for a
client. Runs share the stream: :class:`RunFeed` follows the orchestrator and publishes
each run's view under its own topic (``run/ID``) through :meth:`FleetEvents.publish`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from ganglion.errors import UnknownNeuron
from ganglion.fleet.neuron import Neuron, NeuronView
from ganglion.fleet.registry import Registry
from ganglion.fleet.speed import SpeedBook
from ganglion.wire import sse
from ganglion.wire.encoding import dumps

log = logging.getLogger(__name__)

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


def live_view(neuron: Neuron) -> dict[str, Any]:
    """A :class:`LiveNeuron`, as the JSON-ready values it would dump to."""
    return neuron.view_data() | {"best_tokens_per_second": best_speed(neuron.speeds)}


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``kind`` is its ``event:`` line, ``data`` its JSON payload."""

    kind: str
    data: Any

    def encode(self) -> str:
        return sse.event(dumps(self.data), self.kind)


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
        neurons = [live_view(n) for n in self.registry.neurons()]
        return Event("snapshot", {"neurons": neurons})

    def _neuron_changed(self, neuron: Neuron) -> None:
        if not self._mailboxes:
            return
        topic = f"neuron/{neuron.name}"
        if self._registered(neuron):
            self.publish(topic, Event("neuron", live_view(neuron)))
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
            yield sse.retry(RETRY_MS) + self.snapshot().encode()
            while True:
                if not await mailbox.wait(self.keepalive_s):
                    yield sse.comment("keep-alive")
                    continue
                resync, events = mailbox.take()
                if resync:
                    yield self.snapshot().encode()
                else:
                    yield "".join(event.encode() for event in events)
                await asyncio.sleep(self.coalesce_s)
        finally:
            self._mailboxes.discard(mailbox)


RunViewer = Callable[[str], Awaitable[dict[str, Any] | None]]


def compact_run(view: dict[str, Any]) -> dict[str, Any]:
    """A run's view without its texts (the answer, each delegation's output): what a
    timeline needs, sent often. ``GET /fleet/runs/{id}`` has the rest."""
    delegations = view.get("delegations") or []
    return {key: value for key, value in view.items() if key != "answer"} | {
        "delegations": [{k: v for k, v in d.items() if k != "output"} for d in delegations]
    }


class RunFeed:
    """Puts runs on the stream: a ``run`` event carrying the run's whole view whenever the
    run or one of its delegations changes, at most one per run every ``coalesce_s``.

    The orchestrator's listeners are called synchronously, in the middle of its work, so
    :meth:`changed` only marks the run; one task per run reads the view from the store and
    publishes it, then again (after ``coalesce_s``) if anything changed meanwhile. Nothing
    is read while no client is connected, and the answer's streamed text is not followed.
    """

    def __init__(
        self, hub: FleetEvents, view: RunViewer, *, coalesce_s: float = COALESCE_S
    ) -> None:
        self.hub = hub
        self.view = view
        self.coalesce_s = coalesce_s
        self._dirty: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def changed(self, run_id: str, event: dict[str, Any]) -> None:
        """A :class:`~ganglion.orchestra.events.RunEvents` listener."""
        if self._closed or not self.hub.clients or event.get("type") == "answer":
            return
        self._dirty.add(run_id)
        if run_id not in self._tasks:
            self._tasks[run_id] = asyncio.create_task(self._flush(run_id), name=f"feed-{run_id}")

    async def _flush(self, run_id: str) -> None:
        try:
            while run_id in self._dirty:
                self._dirty.discard(run_id)
                view = await self.view(run_id)
                if view is not None:
                    self.hub.publish(f"run/{run_id}", Event("run", compact_run(view)))
                await asyncio.sleep(self.coalesce_s)
        except Exception:  # the stream misses an update; the run and the gateway go on
            log.exception("could not publish run %s on the event stream", run_id)
        finally:
            self._tasks.pop(run_id, None)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan, once the gateway (registry, orchestra) exists."""
    gateway = app.state.gateway
    hub = FleetEvents(gateway.registry)
    feed = RunFeed(hub, gateway.orchestra.view)
    gateway.orchestra.events.listen(feed.changed)
    app.state.fleet_events = hub
    try:
        yield
    finally:
        await feed.close()


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
    """Live fleet changes: a ``snapshot``, then ``neuron``, ``removed`` and ``run`` events."""
    return StreamingResponse(
        hub.stream(),
        media_type=sse.MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
