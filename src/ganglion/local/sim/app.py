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


def run_sim(config: SimConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the simulator until SIGINT/SIGTERM. ``on_ready`` gets the URL once bound."""
    sock = bind(config.host, config.port)
    bound = replace(config, port=sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_sim_app(bound),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    try:
        if on_ready is not None:
            on_ready(url_of(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()
