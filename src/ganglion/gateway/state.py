"""What the gateway process owns: the store, the registry and its prober, the router and
dispatcher, the metrics, the orchestra, and the API keys lately read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ganglion.config import Settings
from ganglion.dispatch import Dispatcher
from ganglion.fleet.probes import Prober
from ganglion.fleet.registry import Registry
from ganglion.gateway.auth import KeyBook
from ganglion.gateway.metrics import Metrics
from ganglion.orchestra.run import Orchestra
from ganglion.routing import Router
from ganglion.store import Store


@dataclass
class Gateway:
    settings: Settings
    store: Store
    registry: Registry
    prober: Prober
    router: Router
    dispatcher: Dispatcher
    metrics: Metrics
    orchestra: Orchestra
    keys: KeyBook


async def _gateway(request: Request) -> Gateway:
    """Async, so that FastAPI calls it on the event loop, not in a worker thread."""
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]
