"""The gateway's FastAPI app factory. The process that owns the fleet's state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import Depends, FastAPI
from starlette.types import Receive, Scope, Send

from ganglion import __version__
from ganglion.config import Settings
from ganglion.dispatch import Dispatcher, Timeouts
from ganglion.fleet.board import Board
from ganglion.fleet.discovery import Discovery, StaticDiscovery, make_discovery
from ganglion.fleet.probes import Prober
from ganglion.fleet.registry import Registry
from ganglion.fleet.status import Thresholds
from ganglion.gateway import (
    auth,
    bodies,
    errors,
    events,
    fleet_api,
    health,
    history_api,
    hot,
    metrics,
    ollama_api,
    openai_api,
    runs_api,
)
from ganglion.gateway.auth import KeyBook
from ganglion.gateway.metrics import Metrics
from ganglion.gateway.state import Gateway
from ganglion.monitor import dashboard
from ganglion.orchestra.run import Orchestra
from ganglion.routing import ROUTING_POLICIES, Router
from ganglion.store import Store


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        offline_after_failures=settings.offline_after_failures,
        online_after_successes=settings.online_after_successes,
        degraded_speed_ratio=settings.degraded_speed_ratio,
        degraded_error_count=settings.degraded_error_count,
    )


async def open_gateway(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics | None = None,
    board: Board | None = None,
) -> Gateway:
    """Open the store (migrating it), load the registry, and build the prober (not started)."""
    store = await asyncio.to_thread(Store.open, settings.database_url)
    registry = Registry(
        store,
        limits=thresholds(settings),
        probe_timeout_s=settings.probe_timeout_s,
        speed_alpha=settings.speed_ewma_alpha,
        transport=transport,
    )
    await registry.load()
    metrics = metrics or Metrics()
    metrics.watch(registry.neurons)
    router = Router(
        registry,
        ROUTING_POLICIES[settings.routing_policy](),
        cooldown_s=settings.cooldown_s,
        max_queue=settings.max_queue,
        cache_slots=settings.prefix_cache_slots,
        board=board,
    )
    timeouts = Timeouts(
        first_byte_s=settings.first_byte_timeout_s,
        idle_s=settings.idle_timeout_s,
        whole_s=settings.whole_timeout_s,
    )
    dispatcher = Dispatcher(
        registry, router, timeouts=timeouts, max_attempts=settings.max_attempts, observer=metrics
    )
    prober = Prober(registry, settings.probe_interval_s)
    orchestra = Orchestra(
        store,
        registry,
        router,
        dispatcher,
        max_attempts=settings.max_attempts,
        replica=settings.replica,
        lease_s=settings.run_lease_s,
    )
    orchestra.events.listen(metrics.run_event)
    keys = KeyBook(store, settings.key_recheck_s)
    return Gateway(settings, store, registry, prober, router, dispatcher, metrics, orchestra, keys)


class GatewayApp(FastAPI):
    """FastAPI, with the hot paths (:mod:`ganglion.gateway.hot`) answered before its own
    middleware stack (errors, telemetry, body limits: what every other route goes through,
    and what the hot paths do for themselves), and everything else passed to it."""

    def __init__(self, *, max_body_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot = hot.HotPaths(self._framework, max_bytes=max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self.hot(scope, receive, send)

    async def _framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    probe: bool = True,
    board: Board | None = None,
) -> FastAPI:
    """The gateway app. ``transport`` replaces the network for neurons (tests);
    ``probe=False`` leaves the prober off (tests drive probes by hand); ``board`` is the load
    shared with the other workers of ``serve --workers``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = await open_gateway(
            settings, transport=transport, metrics=app.state.metrics, board=board
        )
        app.state.gateway = gateway
        discoveries: list[Discovery] = [
            StaticDiscovery(gateway.registry, settings.neurons, retry_s=settings.discover_retry_s)
        ]
        if settings.discover:
            discoveries.append(make_discovery(settings.discover, gateway.registry, settings))
        app.state.discoveries = discoveries  # /readyz waits until each has synced once
        if probe:
            gateway.prober.start()
        for discovery in discoveries:
            await discovery.start()
        await gateway.orchestra.keep()
        try:
            yield
        finally:
            await gateway.orchestra.stop()
            for discovery in discoveries:
                await discovery.stop()
            await gateway.prober.stop()
            await gateway.dispatcher.settled()
            await gateway.registry.aclose()
            gateway.store.close()
            if board is not None:
                board.close()

    app = GatewayApp(
        max_body_bytes=settings.max_body_bytes,
        title="ganglion gateway",
        version=__version__,
        summary="One Ollama- and OpenAI-compatible endpoint for a whole fleet of LLM servers.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(bodies.RequestBodies, max_bytes=settings.max_body_bytes)
    app.state.metrics = Metrics()
    app.state.store_check = health.StoreCheck()
    app.include_router(health.router)  # probes carry no API key
    app.include_router(fleet_api.router, dependencies=[Depends(auth.fleet_access)])
    app.include_router(events.router, dependencies=[Depends(auth.user_access)])
    app.include_router(ollama_api.router, dependencies=[Depends(auth.user_access)])
    app.include_router(openai_api.router, dependencies=[Depends(auth.user_access)])
    app.include_router(metrics.router, dependencies=[Depends(auth.user_access)])
    app.include_router(history_api.router, dependencies=[Depends(auth.fleet_access)])
    app.include_router(runs_api.router, dependencies=[Depends(auth.user_access)])
    app.include_router(dashboard.router)
    return app
