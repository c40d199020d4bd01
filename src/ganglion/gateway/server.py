"""Running the gateway under uvicorn (``ganglion serve``)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from ganglion.config import Settings
from ganglion.errors import ConfigError
from ganglion.gateway.app import create_app, open_gateway


def preflight(settings: Settings) -> None:
    """Fail fast and clearly: the port must be free and the store must open and migrate."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((settings.host, settings.port))
        except OSError as error:
            raise ConfigError(
                f"cannot bind {settings.host}:{settings.port} ({error.strerror}): is a gateway "
                "already running there? Stop it, or choose another --port"
            ) from None

    async def _open_store() -> None:
        gateway = await open_gateway(settings)
        await gateway.registry.aclose()
        gateway.store.close()

    asyncio.run(_open_store())


def serve(settings: Settings, *, log_level: str = "warning") -> None:
    """Serve until interrupted. Call :func:`preflight` first for clear start-up errors."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
