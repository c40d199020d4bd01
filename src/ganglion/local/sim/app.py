"""The simulator: a real HTTP server that answers like an LLM neuron at a configured speed.

``ganglion sim`` serves the Ollama API and the OpenAI API for capacity planning, dashboards
without GPUs, tests and benchmarks. It never pretends to be inference: its answers are
filler words beginning with ``[sim]`` (or a valid instance of a requested JSON schema).

- :class:`SimConfig`: the neuron being modelled (speeds, slots, faults), validated once.
- :func:`create_sim_app`: the ASGI app, with the clock, sleep and randomness injectable.
- :func:`run_sim`: bind the port and serve with uvicorn until interrupted.

Besides the two dialects it serves ``GET /sim/log`` (every request: time, method, path,
model) and ``GET /sim/stats`` (config, in-flight, totals).
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import time
from collections.abc import Callable
from dataclasses import replace

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ganglion.clock import utcnow
from ganglion.errors import ConfigError
from ganglion.local.sim.config import SimConfig
from ganglion.local.sim.dialect import LOG_SCOPE_KEY
from ganglion.local.sim.engine import Clock, Simulator, Sleep, WallClock
from ganglion.local.sim.ollama import OllamaAPI
from ganglion.local.sim.openai import OpenAIAPI
from ganglion.net import raise_open_files


class RequestLog:
    """ASGI middleware: record every HTTP request in the simulator's log as it arrives."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[LOG_SCOPE_KEY] = self.sim.record(scope["method"], scope["path"])
        await self.app(scope, receive, send)


def create_sim_app(
    config: SimConfig,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    wall: WallClock = utcnow,
) -> Starlette:
    """The simulator as an ASGI app. Tests pass a virtual ``clock``/``sleep`` and a seeded
    ``rng``; by default the generator is seeded from ``config.seed``."""
    sim = Simulator(
        config, clock=clock, sleep=sleep, rng=rng or random.Random(config.seed), wall=wall
    )

    async def log(request: Request) -> Response:
        return JSONResponse(list(sim.log))

    async def stats(request: Request) -> Response:
        return JSONResponse(sim.stats())

    routes = [
        *OllamaAPI(sim).routes(),
        *OpenAIAPI(sim).routes(),
        Route("/sim/log", log, methods=["GET"]),
        Route("/sim/stats", stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(RequestLog, sim=sim)])
    app.state.sim = sim
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`ConfigError` saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; pick another with --port "
                "(--port 0 takes any free one)"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ByPort:
    """ASGI: many simulators in one process, each answering on its own port."""

    def __init__(self, apps: dict[int, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        await self.apps[server[1] if server else next(iter(self.apps))](scope, receive, send)


def bind_many(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets: on ``port`` and the ports after it, or on any free ports
    when ``port`` is 0. All or none: a port in use closes the ones bound."""
    socks: list[socket.socket] = []
    try:
        for index in range(count):
            socks.append(bind(host, port + index if port else 0))
    except ConfigError:
        for sock in socks:
            sock.close()
        raise
    return socks


def run_sim(
    config: SimConfig, *, count: int = 1, on_ready: Callable[[list[str]], None] | None = None
) -> None:
    """Serve ``count`` simulators until SIGINT/SIGTERM: ``config`` on its port, or on that port
    and the ones after it, named ``NAME-0``, ``NAME-1``... when there are several (each with
    its own slots, clock of work and log). ``on_ready`` gets their URLs once bound."""
    raise_open_files(4 * count + 64)  # a listening socket each, and their connections
    socks = bind_many(config.host, config.port, count)
    apps: dict[int, ASGIApp] = {}
    for index, sock in enumerate(socks):
        port = sock.getsockname()[1]
        name = config.name if count == 1 else f"{config.name}-{index}"
        seed = None if config.seed is None else config.seed + index
        apps[port] = create_sim_app(replace(config, port=port, name=name, seed=seed))
    server = uvicorn.Server(
        uvicorn.Config(
            ByPort(apps) if count > 1 else next(iter(apps.values())),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=config.keep_alive_s,
        )
    )
    try:
        if on_ready is not None:
            on_ready([url_of(sock) for sock in socks])
        server.run(sockets=socks)
    finally:
        for sock in socks:
            sock.close()
