"""``GET /fleet/neurons/{name}/history``: a neuron's recent past for the monitor's detail
view (what it holds: :mod:`ganglion.monitor.history`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request

from ganglion.clock import aware
from ganglion.gateway.state import GatewayDep
from ganglion.monitor.history import NeuronHistory, SpeedPoint, StatusLog, request_errors

SAMPLES_SHOWN = 60


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
    await gateway.registry.writes.flush()  # the samples still waiting to be written, too
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
