"""Options shared by several commands, declared once."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ganglion.defaults import DEFAULT_GATEWAY_URL

if TYPE_CHECKING:
    from ganglion.client import GatewayClient

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


def gateway_client(url: str, api_key: str | None = None) -> GatewayClient:
    """A client of the gateway at ``url``. httpx is imported here, by the commands that talk
    to a gateway, so that the others (and every ``--help``) start without it.

    httpx also imports its own command line (click, rich's progress bars, pygments) whenever
    click is installed: about a third of a ``ganglion neuron list`` start, for a command
    ganglion never runs. Marking that module absent before httpx loads makes httpx take the
    fallback it has for installs without its ``cli`` extra; once httpx is loaded, this changes
    nothing."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from ganglion.client import GatewayClient

    return GatewayClient(url, api_key=api_key)
