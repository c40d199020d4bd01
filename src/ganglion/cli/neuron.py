"""``ganglion neuron``: add, list, remove, suspend and resume the fleet's neurons."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ganglion.cli.options import (
    DEFAULT_GATEWAY,
    ApiKeyOption,
    GatewayOption,
    JsonOption,
    gateway_client,
)
from ganglion.neurons.base import Dialect

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

neuron_app = typer.Typer(
    help="Register and manage neurons: the inference endpoints of the fleet.",
    no_args_is_help=True,
)

STATUS_STYLE = {"active": "green", "degraded": "yellow", "offline": "dim red", "suspended": "blue"}


def register(app: typer.Typer) -> None:
    app.add_typer(neuron_app, name="neuron")


@neuron_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="Server URL, e.g. http://gpu-box:11434")],
    name: Annotated[
        str | None, typer.Option(help="Name: letters, digits, . _ - (default HOST-PORT).")
    ] = None,
    api: Annotated[Dialect | None, typer.Option(help="Dialect; detected when not given.")] = None,
    node: Annotated[str | None, typer.Option(help="Machine it runs on; default its host.")] = None,
    slots: Annotated[
        int,
        typer.Option(min=1, help="Requests it runs at once (Ollama: OLLAMA_NUM_PARALLEL)."),
    ] = 1,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a neuron. The gateway checks that it answers and detects its dialect."""
    body: dict[str, object] = {"url": url, "name": name, "node": node, "slots": slots}
    body["api"] = api.value if api else None
    with gateway_client(gateway, api_key) as client:
        view = client.request("POST", "/fleet/neurons", json_body=body)
    if as_json:
        print(json.dumps(view, indent=2))
        return
    models = ", ".join(view["models"]) or "no models yet"
    _console().print(
        f"added [bold]{view['name']}[/] ({view['api']}, node {view['node']}): {models}",
        highlight=False,
    )


@neuron_app.command("list")
def list_(
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show every neuron: status (with the reason when not active), speed, load."""
    with gateway_client(gateway, api_key) as client:
        views = client.request("GET", "/fleet/neurons")
    if as_json:
        print(json.dumps(views, indent=2))
        return
    console = _console()
    if not views:
        console.print("no neurons yet: add one with 'ganglion neuron add URL'")
        return
    console.print(neuron_table(views))


def _console() -> Console:
    """A console for people; ``--json`` output never loads rich (issue 14: CLI start)."""
    from rich.console import Console

    return Console()


def neuron_table(views: list[dict[str, Any]]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("NAME", "STATUS", "NODE", "API", "MODELS", "TOK/S", "BUSY", "LAST SEEN"):
        numeric = column in ("TOK/S", "BUSY")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for view in views:
        status = view["status"]
        shown = f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"
        if view.get("reason"):
            shown += f"\n[dim]{escape(view['reason'])}[/]"
        idle_gpu = view.get("idle_gpu")
        if idle_gpu and idle_gpu != view.get("reason"):
            shown += f"\n[yellow]{escape(idle_gpu)}[/]"
        tps = view.get("tokens_per_second")
        table.add_row(
            view["name"],
            shown,
            view["node"],
            view["api"],
            ", ".join(view["models"]),
            f"{tps:.1f}" if tps is not None else "-",
            str(view["in_flight"]),
            _ago(view.get("last_seen")),
        )
    return table


def _ago(stamp: str | None) -> str:
    if not stamp:
        return "never"
    seen = datetime.fromisoformat(stamp)
    seconds = (datetime.now(seen.tzinfo) - seen).total_seconds()
    if seconds < 90:
        return f"{max(seconds, 0):.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return seen.strftime("%Y-%m-%d %H:%M")


def _act(method: str, path: str, gateway: str, api_key: str | None) -> Any:
    with gateway_client(gateway, api_key) as client:
        return client.request(method, path)


@neuron_app.command("rm")
def rm(
    name: str,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
) -> None:
    """Remove a neuron from the fleet (its speed history goes with it)."""
    _act("DELETE", f"/fleet/neurons/{name}", gateway, api_key)
    _console().print(f"removed {name}")


@neuron_app.command("suspend")
def suspend(
    name: str,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
) -> None:
    """Take a neuron out of rotation without removing it; it keeps its history."""
    view = _act("POST", f"/fleet/neurons/{name}/suspend", gateway, api_key)
    _console().print(f"{name} is {view['status']}")


@neuron_app.command("resume")
def resume(
    name: str,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
) -> None:
    """Put a suspended neuron back into rotation (after a fresh probe)."""
    view = _act("POST", f"/fleet/neurons/{name}/resume", gateway, api_key)
    reason = f" ({view['reason']})" if view.get("reason") else ""
    _console().print(f"{name} is {view['status']}{reason}", highlight=False)
