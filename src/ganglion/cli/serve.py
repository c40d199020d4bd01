"""``ganglion serve``: run the gateway, the process that owns the fleet's state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ganglion.cli.options import DbOption
from ganglion.defaults import DEFAULT_HOST, DEFAULT_PORT, LogLevel


def register(app: typer.Typer) -> None:
    app.command(
        "serve", short_help="Start the gateway: one Ollama and OpenAI endpoint for the fleet."
    )(serve)


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            envvar="GANGLION_CONFIG",
            help="TOML file of settings and [[neuron]] tables to register at start "
            "(docs/config.md). Flags and GANGLION_* variables override it.",
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            envvar="GANGLION_HOST", help=f"Address to bind; loopback ({DEFAULT_HOST}) by default."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(envvar="GANGLION_PORT", help=f"Port to bind (default {DEFAULT_PORT})."),
    ] = None,
    db: DbOption = None,
    probe_interval: Annotated[
        float | None, typer.Option(help="Seconds between liveness probes (default 5).")
    ] = None,
    discover: Annotated[
        str | None,
        typer.Option(
            help="Register neurons found by watching a source: 'kubernetes' (labelled Services)."
        ),
    ] = None,
    require_keys: Annotated[
        bool,
        typer.Option(
            "--require-keys",
            help="Require API keys even on loopback (GANGLION_REQUIRE_KEYS); always on for a "
            "non-loopback bind.",
        ),
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            help="Routing: cache-aware (earliest predicted finish, counting what each neuron "
            "holds in its prompt cache; default), finish-time (the same, blind to caches), "
            "least-busy, round-robin."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            envvar="GANGLION_WORKERS",
            help="Gateway processes sharing the port (default 1): more cores for more "
            "requests a second. They share each neuron's load (docs/gateway.md).",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            metavar="LEVEL",
            help="critical, error, warning, info (each request, without its query string) or "
            "debug (and ganglion's own detail).",
        ),
    ] = LogLevel.WARNING,
) -> None:
    """Start the gateway: one Ollama and OpenAI endpoint for the fleet, and its dashboard.

    It serves the fleet API, runs, liveness probes, the dashboard at /, and the store.

    Binds 127.0.0.1:11435 by default, open to local users. A non-loopback bind requires API
    keys, and is refused until an admin key exists (ganglion keys create --admin).
    """
    from sqlalchemy.engine import make_url

    from ganglion.config_file import load_gateway_settings
    from ganglion.gateway.server import preflight
    from ganglion.gateway.server import serve as run

    settings = load_gateway_settings(
        config,
        host=host,
        port=port,
        database_url=db,
        probe_interval_s=probe_interval,
        discover=discover,
        routing_policy=policy,
        workers=workers,
        require_keys=require_keys or None,  # unset: GANGLION_REQUIRE_KEYS decides
    )
    preflight(settings)
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    keys = "API keys required" if settings.keys_enforced else "open on loopback"
    processes = f"; {settings.workers} workers" if settings.workers > 1 else ""
    Console(stderr=True).print(
        f"ganglion gateway on http://{settings.host}:{settings.port} "
        f"(API docs /docs; store {where}; {keys}{processes})",
        highlight=False,
    )
    run(settings, log_level=log_level)
