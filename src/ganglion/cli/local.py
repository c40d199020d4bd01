"""``ganglion local``: the embedded default, local llama.cpp neurons with the bundled model."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console

from ganglion.cli.neuron import neuron_table
from ganglion.cli.options import DEFAULT_GATEWAY, ApiKeyOption, GatewayOption
from ganglion.client import GatewayClient
from ganglion.local.fleet import LocalFleet

local_app = typer.Typer(
    help="Run neurons on this machine with the bundled SmolLM2-135M model (no GPU needed).",
    no_args_is_help=True,
)

NeuronsOption = Annotated[
    int, typer.Option("--neurons", "-n", min=1, max=16, help="How many local neurons to start.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(local_app, name="local")


@local_app.command("up")
def up(
    neurons: NeuronsOption = 2,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
) -> None:
    """Start N llama.cpp servers on free loopback ports and register them as local-1..N.

    Runs in the foreground; Ctrl-C unregisters and stops them. The gateway must be running
    ('ganglion serve', or use 'ganglion demo', which starts everything).
    """
    console = Console(stderr=True)
    with GatewayClient(gateway, api_key=api_key) as client:
        client.request("GET", "/fleet/neurons")  # fail fast when the gateway is not there
        fleet = LocalFleet(client, neurons, say=lambda line: console.print(line, highlight=False))
        try:
            views = fleet.up()
            Console().print(neuron_table(views))
            console.print("local neurons are up; Ctrl-C stops them")
            wait_for_interrupt()
        finally:
            fleet.down()
            console.print("local neurons stopped")


def wait_for_interrupt() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
