"""One :class:`Settings` object, built once at start and passed in.

Every setting reads from the environment with the ``GANGLION_`` prefix (``GANGLION_DATABASE_URL``,
``GANGLION_HOST``...) and from the config file (:mod:`ganglion.config_file`, which calls
:func:`load_settings` with the file's values), and can be overridden by a command-line flag:
flag, then environment, then file, then default. Validators refuse unsafe or malformed values
with a message that says what to do.

A leaf: of ganglion it imports only :mod:`ganglion.errors` and the constants of
:mod:`ganglion.defaults`. What needs the layers above (the routing policies, a ``[[neuron]]``
table) is checked by :mod:`ganglion.config_file`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ganglion.defaults import DEFAULT_HOST, DEFAULT_PORT, default_data_dir
from ganglion.errors import ConfigError
from ganglion.net import is_loopback

DEFAULT_PROBE_INTERVAL_S = 5.0
ENV_PREFIX = "GANGLION_"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # a long chat history fits; a stray upload does not


def default_database_url() -> str:
    return f"sqlite:///{default_data_dir() / 'ganglion.db'}"


def normalize_database_url(url: str) -> str:
    """Return a SQLAlchemy URL for ``url``, or raise :class:`ConfigError` saying what is wrong.

    ``postgresql://`` and ``postgres://`` use the psycopg 3 driver; ``sqlite:///path`` a file.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"malformed database URL {url!r}: use sqlite:///PATH/ganglion.db or "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise ConfigError(
            f"unsupported database {backend!r} in {url!r}: ganglion stores its state in SQLite "
            "(sqlite:///PATH) or PostgreSQL (postgresql://...)"
        )
    return parsed.render_as_string(hide_password=False)


class Settings(BaseSettings):
    """The gateway's settings. Build once (``Settings()``), pass in everywhere."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    probe_interval_s: float = Field(default=DEFAULT_PROBE_INTERVAL_S, gt=0)
    probe_timeout_s: float = Field(default=3.0, gt=0)
    offline_after_failures: int = Field(default=2, ge=1)
    online_after_successes: int = Field(default=1, ge=1)
    degraded_speed_ratio: float = Field(default=0.5, gt=0, lt=1)
    degraded_error_count: int = Field(default=3, ge=1)
    speed_ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    bench_tokens: int = Field(default=64, ge=8)
    require_keys: bool = False
    key_recheck_s: float = Field(default=1.0, ge=0)
    discover: str | None = None
    discover_namespace: str | None = None
    discover_address: Literal["auto", "dns", "cluster-ip"] = "auto"
    discover_resync_s: float = Field(default=60.0, gt=0)
    discover_retry_s: float = Field(default=5.0, gt=0)
    routing_policy: str = "cache-aware"
    prefix_cache_slots: int = Field(default=0, ge=0)
    first_byte_timeout_s: float = Field(default=120.0, gt=0)
    idle_timeout_s: float = Field(default=60.0, gt=0)
    whole_timeout_s: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=15.0, ge=0)
    max_queue: int = Field(default=32, ge=0)
    replica_id: str | None = Field(default=None, min_length=1, max_length=200)
    run_lease_s: float = Field(default=30.0, ge=1)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    workers: int = Field(default=1, ge=1, le=64)
    neurons: list[Any] | None = None
    """Neurons to register at start: the config file's ``[[neuron]]`` tables, each a
    :class:`~ganglion.fleet.neuron.NewNeuron` that :mod:`ganglion.config_file` has checked;
    ``None`` without a config file, so the neurons an earlier file registered are left alone."""

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @property
    def keys_enforced(self) -> bool:
        """API keys are required on a non-loopback bind, or when ``require_keys`` is set.
        (Whether an admin key exists is checked by ``gateway.server.preflight``, which sees
        the store.)"""
        return self.require_keys or not is_loopback(self.host)

    @property
    def replica(self) -> str:
        """This gateway's name among replicas sharing a database: ``GANGLION_REPLICA_ID``, or
        host name and port (stable across restarts, so a restarted gateway takes its own
        runs back at once; two live gateways cannot share a host and port)."""
        return self.replica_id or f"{socket.gethostname()}:{self.port}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(file: Mapping[str, object] | None = None, **overrides: object) -> Settings:
    """Build :class:`Settings` from ``overrides`` (``None`` values ignored), the environment,
    and ``file`` (a config file's values, read by :mod:`ganglion.config_file`), in that order
    of precedence (then the defaults).

    A validation failure becomes one :class:`ConfigError` line naming the setting.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    if file is not None:
        unset = {k: v for k, v in file.items() if k == "neurons" or not _in_environment(k)}
        given = {**unset, **given}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ConfigError:
        raise
    except ValidationError as error:
        first = error.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):
            raise cause from None
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None


def _in_environment(name: str) -> bool:
    variable = f"{ENV_PREFIX}{name}".upper()
    return any(key.upper() == variable for key in os.environ)
