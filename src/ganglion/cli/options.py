"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from ganglion.config import DEFAULT_GATEWAY_URL

GatewayOption = Annotated[
    str,
    typer.Option(
        "--gateway",
        envvar="GANGLION_URL",
        help="The gateway to talk to.",
        show_default=True,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="GANGLION_API_KEY", help="API key, when the gateway needs one."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="GANGLION_DATABASE_URL",
        help="Database URL: sqlite:///PATH (default: a file in the user data dir) or "
        "postgresql://USER:PASS@HOST/DB.",
    ),
]

DEFAULT_GATEWAY = DEFAULT_GATEWAY_URL
