"""``ganglion local``: the embedded default, local llama.cpp neurons with the bundled model."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ganglion.cli.neuron import neuron_table
from ganglion.cli.options import DEFAULT_GATEWAY, ApiKeyOption, GatewayOption, gateway_client

local_app = typer.Typer(
    help="Run neurons on this machine with the bundled SmolLM2-135M model (no GPU needed).",
    short_help="Run neurons here with the bundled SmolLM2-135M model (no GPU).",
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
    from ganglion.local.fleet import LocalFleet

    console = Console(stderr=True)
    with gateway_client(gateway, api_key) as client:
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


@local_app.command("build")
def build(
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when the cache has the wheel.")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            metavar="DIR",
            help="The wheel cache [$GANGLION_WHEEL_CACHE, else ~/.cache/ganglion/wheels].",
        ),
    ] = None,
) -> None:
    """Build llama-cpp-python portable, once, and install it into this Python environment.

    By default llama.cpp tunes itself to the CPU that compiles it, and such a build can
    crash on another CPU (a native build made on an AVX-512/AMX Xeon crashed on its first
    answer there too). This compiles it with fixed flags (AVX2, FMA, F16C on x86-64: any
    x86-64 CPU with AVX2 runs it) into ganglion's wheel cache, keyed by version, machine
    and flags, and installs that wheel. The first build takes about 5 minutes on 2 cores;
    after that it installs from the cache in seconds. 'make' runs it for you.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ganglion.llamacpp import PortableBuild, build_wheel, cache_root, install_wheel
    from ganglion.llamacpp import installed_wheel as installed

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    portable = PortableBuild.for_machine()
    root = cache_dir or cache_root()
    wheel = None if force else portable.cached_wheel(root)
    if wheel is None:
        log = root / f"{portable.key}.log"
        console.print(f"building {portable.describe} (about 5 minutes on 2 cores; log: {log})")
        columns = (SpinnerColumn(), TextColumn("compiling llama.cpp"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            progress.add_task("build", total=None)
            wheel = build_wheel(portable, root, log)
        console.print(f"built {wheel}")
    elif installed() == wheel:
        console.print(f"{portable.describe} is installed, from {wheel}")
        return
    install_wheel(portable, wheel)
    console.print(f"installed {portable.describe}, from {wheel}")


def wait_for_interrupt() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
