"""``ganglion demo``: the whole thing on this machine, from nothing, in one command."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from ganglion.cli.bench import results_table, run_with_progress
from ganglion.cli.local import NeuronsOption, wait_for_interrupt
from ganglion.cli.neuron import neuron_table
from ganglion.cli.options import DbOption, gateway_client
from ganglion.cli.run import follow, show
from ganglion.defaults import DEFAULT_HOST, DEFAULT_PORT, default_data_dir
from ganglion.errors import GatewayError

if TYPE_CHECKING:
    from ganglion.client import GatewayClient
    from ganglion.local.fleet import LocalFleet

GATEWAY_START_S = 60.0
SAMPLE_TASK = "Name three rivers, three mountains and three deserts, one line each."
# always split, so the demo shows every phase; `ganglion run` decides for itself by default
SAMPLE_RUN = {"task": SAMPLE_TASK, "decompose": "always", "max_subtasks": 3}


def register(app: typer.Typer) -> None:
    app.command("demo", short_help="Start the gateway and local neurons, and run a sample task.")(
        demo
    )


def demo(
    neurons: NeuronsOption = 2,
    port: Annotated[int, typer.Option(help="Gateway port.")] = DEFAULT_PORT,
    db: DbOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Tear everything down after the tour (for scripts).")
    ] = False,
) -> None:
    """Start the gateway and local neurons, measure them, show the fleet, and run a task.

    Everything runs on 127.0.0.1 with the bundled SmolLM2-135M; Ctrl-C stops it all cleanly.
    """
    from ganglion.local.fleet import LocalFleet

    console = Console(stderr=True)

    def say(line: str) -> None:
        console.print(line, highlight=False)

    url = f"http://{DEFAULT_HOST}:{port}"
    gateway = start_gateway(port, db, say)
    try:
        with gateway_client(url) as client:
            fleet = LocalFleet(client, neurons, say=say)
            try:
                tour(client, fleet, url, say)
                if not once:
                    say("\nCtrl-C stops the demo")
                    wait_for_interrupt()
            finally:
                fleet.down()
    finally:
        stop_process(gateway)
        say("demo stopped")


def tour(client: GatewayClient, fleet: LocalFleet, url: str, say: Callable[[str], None]) -> None:
    """Bring the local neurons up, measure them, show the fleet, and run a sample task."""
    fleet.up()
    say("measuring each neuron's decode speed (ganglion bench)")
    results = run_with_progress(client, {"neurons": fleet.names}, quiet=False)
    Console().print(results_table(results))
    Console().print(neuron_table(client.request("GET", "/fleet/neurons")))
    say(f"\na sample run: {SAMPLE_TASK!r}")
    started = client.request("POST", "/fleet/runs", json_body=SAMPLE_RUN)
    final = follow(client, started["id"], quiet=False)
    show(final)
    say(f"\ndashboard {url}/\ngateway   {url} (Ollama and OpenAI APIs)\nAPI docs  {url}/docs")
    say(f"try       ganglion neuron list --gateway {url}")
    say(f'          ganglion run "your task" --gateway {url}')


def start_gateway(port: int, db: str | None, say: Callable[[str], None]) -> subprocess.Popen[bytes]:
    """Start ``ganglion serve`` as a child process and wait until it answers."""
    import httpx

    command = [sys.executable, "-m", "ganglion", "serve", "--port", str(port)]
    command += ["--probe-interval", "2"]
    if db:
        command += ["--db", db]
    with socket.socket() as probe:
        if probe.connect_ex((DEFAULT_HOST, port)) == 0:
            raise GatewayError(
                f"something already listens on {DEFAULT_HOST}:{port} (an earlier gateway?): "
                "stop it, or give the demo another --port"
            )
    log = default_data_dir() / "logs" / "demo-gateway.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"starting the gateway on {DEFAULT_HOST}:{port} (log: {log})")
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + GATEWAY_START_S
    url = f"http://{DEFAULT_HOST}:{port}/fleet/neurons"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else f"exit status {process.returncode}"
            raise GatewayError(f"the gateway did not start: {last.removeprefix('error: ')}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_process(process)
    raise GatewayError(f"the gateway did not answer within {GATEWAY_START_S:.0f} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
