"""A neuron's recent past for the monitor's detail view: speeds, errors, status changes.

``GET /fleet/neurons/{name}/history`` (:mod:`ganglion.gateway.history_api`) answers from
three places: speed samples from the store, request errors the registry keeps (stamped with
its monotonic clock, turned into wall-clock times here), and a short log of status changes
kept by :class:`StatusLog`, which listens to the registry from the gateway's start.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from pydantic import BaseModel

from ganglion.clock import utcnow
from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry
from ganglion.fleet.status import NeuronStatus

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
