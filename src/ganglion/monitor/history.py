"""A neuron's recent past for the monitor's detail view: speeds, errors, status changes.

``GET /fleet/neurons/{name}/history`` answers from three places: speed samples from the
store, request errors the registry keeps (stamped with its monotonic clock, turned into
wall-clock times here), and a short log of status changes kept by :class:`StatusLog`, which
listens to the registry from the gateway's start.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel

from ganglion.clock import aware, utcnow
from ganglion.fleet.model import Neuron
from ganglion.fleet.registry import Registry
from ganglion.fleet.status import NeuronStatus
from ganglion.gateway.state import GatewayDep

SAMPLES_SHOWN = 60
CHANGES_KEPT = 30


class SpeedPoint(BaseModel):
    at: datetime
    model: str
    source: str
    tokens_per_second: float


class ErrorEntry(BaseModel):
    at: datetime
    reason: str


class StatusChange(BaseModel):
    at: datetime
    status: NeuronStatus
    reason: str | None


class NeuronHistory(BaseModel):
    """What the detail drawer shows beyond the live view. Newest last in every list."""

    name: str
    models: list[str]
    loaded: list[str] | None
    samples: list[SpeedPoint]
    errors: list[ErrorEntry]
    changes: list[StatusChange]


class StatusLog:
    """The last few status changes of every neuron, with wall-clock times."""

    def __init__(self, registry: Registry) -> None:
        self._status = {n.name: n.status for n in registry.neurons()}
        self._changes: dict[str, deque[StatusChange]] = {}
        registry.subscribe(self._changed)

    def _changed(self, neuron: Neuron) -> None:
        if self._status.get(neuron.name) == neuron.status:
            return
        self._status[neuron.name] = neuron.status
        change = StatusChange(at=utcnow(), status=neuron.status, reason=neuron.reason)
        self._changes.setdefault(neuron.name, deque(maxlen=CHANGES_KEPT)).append(change)

    def changes(self, name: str) -> list[StatusChange]:
        return list(self._changes.get(name, ()))


def request_errors(registry: Registry, neuron: Neuron) -> list[ErrorEntry]:
    now_wall, now = utcnow(), registry.clock()
    return [
        ErrorEntry(at=now_wall - timedelta(seconds=now - when), reason=reason)
        for when, reason in neuron.health.errors
    ]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan, once the registry exists."""
    app.state.status_log = StatusLog(app.state.gateway.registry)
    yield


def _status_log(request: Request) -> StatusLog:
    log: StatusLog = request.app.state.status_log
    return log


StatusLogDep = Annotated[StatusLog, Depends(_status_log)]

router = APIRouter(prefix="/fleet", tags=["monitor"], lifespan=lifespan)


@router.get("/neurons/{name}/history")
async def neuron_history(name: str, gateway: GatewayDep, log: StatusLogDep) -> NeuronHistory:
    """Recent speed samples, request errors and status changes of one neuron."""
    neuron = gateway.registry.get(name)
    rows = await asyncio.to_thread(gateway.store.samples, neuron.id, SAMPLES_SHOWN)
    samples = [
        SpeedPoint(
            at=aware(row.created_at),
            model=row.model,
            source=row.source,
            tokens_per_second=round(row.tokens_per_second, 2),
        )
        for row in rows
        if row.tokens_per_second is not None
    ]
    return NeuronHistory(
        name=neuron.name,
        models=list(neuron.models),
        loaded=neuron.loaded,
        samples=samples,
        errors=request_errors(gateway.registry, neuron),
        changes=log.changes(name),
    )
