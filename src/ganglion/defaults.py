"""What ganglion assumes before any setting is read: where the gateway listens, where it
keeps its data, how much ``ganglion serve`` logs.

A leaf that imports nothing, so that every command (and its ``--help``) can show these
without loading the settings machinery. :class:`~ganglion.config.Settings` takes its defaults
from here.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from platformdirs import user_data_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
DEFAULT_GATEWAY_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"


class LogLevel(StrEnum):
    """How much ``ganglion serve`` logs. uvicorn's ``trace`` is left out on purpose: it
    writes raw requests, URLs and all, to the log."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


def default_data_dir() -> Path:
    return Path(user_data_dir("ganglion", appauthor=False))
