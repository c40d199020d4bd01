"""Running the gateway under uvicorn (``ganglion serve``), and what it logs."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ganglion.config import Settings
from ganglion.defaults import LogLevel
from ganglion.errors import ConfigError
from ganglion.fleet.board import Board
from ganglion.fleet.discovery import make_discovery
from ganglion.fleet.neuron import NewNeuron
from ganglion.gateway.app import create_app, open_gateway
from ganglion.gateway.auth import Role
from ganglion.gateway.health import PROBE_PATHS
from ganglion.gateway.protocol import Protocol
from ganglion.net import is_loopback, raise_open_files
from ganglion.store import Store


def preflight(settings: Settings) -> None:
    """Fail fast and clearly, before binding anything: the store must open and migrate, a
    gateway that enforces API keys needs an admin key, and the port must be free."""

    async def _open_store() -> None:
        gateway = await open_gateway(settings)
        try:
            await asyncio.to_thread(check_keys, settings, gateway.store)
            if settings.discover:  # a bad kind or a missing kubeconfig fails here, clearly
                make_discovery(settings.discover, gateway.registry, settings)
        finally:
            await gateway.registry.aclose()
            gateway.store.close()

    asyncio.run(_open_store())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((settings.host, settings.port))
        except OSError as error:
            raise ConfigError(
                f"cannot bind {settings.host}:{settings.port} ({error.strerror}): is a gateway "
                "already running there? Stop it, or choose another --port"
            ) from None


def check_keys(settings: Settings, store: Store) -> None:
    """Refuse to start a gateway that enforces API keys while no active admin key exists:
    a public fleet must never be open, and someone must be able to change it."""
    if not settings.keys_enforced or store.count_active_keys(Role.ADMIN) > 0:
        return
    create = "ganglion keys create --admin, with the same --db"
    if not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to bind {settings.host}: a non-loopback bind exposes the fleet and no "
            f"admin API key exists. Create one first ({create}), or bind 127.0.0.1"
        )
    raise ConfigError(
        f"--require-keys needs an admin API key and none exists: create one first ({create})"
    )


class HideQuery(logging.Filter):
    """Access-log lines show a path without its query string. The gateway takes no secret
    in a URL, but a key sent there by mistake must not land in a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and "?" in str(args[2]):
            client, method, path, version, status = args
            record.args = (client, method, str(path).split("?", 1)[0] + "?...", version, status)
        return True


class QuietProbes(logging.Filter):
    """A probe that passes is not traffic: ``/healthz`` and ``/readyz`` answered 200 leave no
    access-log line (Kubernetes asks every few seconds). A failing one is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            _, method, path, _, status = args
            return not (method == "GET" and path in PROBE_PATHS and status == 200)
        return True


def log_config(level: LogLevel) -> dict[str, Any]:
    """uvicorn's logging, with query strings hidden, and ganglion's own loggers at ``level``."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"hide_query": {"()": HideQuery}, "quiet_probes": {"()": QuietProbes}}
    config["handlers"]["access"]["filters"] = ["quiet_probes", "hide_query"]
    config["loggers"]["ganglion"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


#: What a worker process of ``serve --workers N`` is handed by its parent.
WORKER_SETTINGS = "GANGLION_WORKER_SETTINGS"
WORKER_BOARD = "GANGLION_WORKER_BOARD"


def serve(settings: Settings, *, log_level: LogLevel = LogLevel.WARNING) -> None:
    """Serve until interrupted. Call :func:`preflight` first for clear start-up errors.

    With ``settings.workers`` above one, uvicorn runs that many processes on the port (and
    starts a new one for any that dies); they share each neuron's load through a
    :class:`~ganglion.fleet.board.Board` made here, and :func:`worker_app` builds each one's
    app."""
    raise_open_files()  # a kept-alive connection per neuron: thousands of them
    # The access log is written at info and debug only; below those, uvicorn would still
    # build each line's client address and path, and read the proxy headers for the address.
    logs_requests = log_level in (LogLevel.INFO, LogLevel.DEBUG)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": log_config(log_level),
        "log_level": log_level.value,
        "access_log": logs_requests,
        "proxy_headers": logs_requests,
        "server_header": False,  # one header less to check and write on every answer
        "http": Protocol,  # an answer's head written with its body's first bytes
        "timeout_graceful_shutdown": 5,
    }
    if settings.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()
        return
    board = Board.create(settings.workers)
    os.environ[WORKER_SETTINGS] = settings.model_dump_json()
    os.environ[WORKER_BOARD] = board.name
    try:
        target = f"{__name__}:{worker_app.__name__}"
        uvicorn.run(target, factory=True, workers=settings.workers, **options)
    finally:
        board.close()


def worker_app() -> Any:
    """One worker's app, in a process uvicorn started: the parent's settings, a row of its
    load board, and a replica name of its own (``HOST:PORT/ROW``) for the runs it carries.
    Only the first worker registers the config file's neurons; the others take them in from
    the store, as every replica does (``Registry.sync``)."""
    settings = Settings.model_validate_json(os.environ[WORKER_SETTINGS])
    board = Board.join(os.environ[WORKER_BOARD], settings.workers)
    listed = settings.neurons if board.row == 0 else None
    own = {
        "replica_id": f"{settings.replica}/{board.row}",
        "neurons": None if listed is None else [NewNeuron.model_validate(n) for n in listed],
    }
    return create_app(settings.model_copy(update=own), board=board)
