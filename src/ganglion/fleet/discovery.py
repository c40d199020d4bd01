"""Discovery: neurons registered and removed by watching a source (being written)."""

from __future__ import annotations

from typing import Protocol

from ganglion.errors import ConfigError
from ganglion.fleet.registry import Registry


class Discovery(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def make_discovery(kind: str, registry: Registry) -> Discovery:
    """The discovery named ``kind`` (``kubernetes``), watching for ``registry``."""
    raise ConfigError(f"unknown discovery {kind!r}: the choices are: kubernetes")
