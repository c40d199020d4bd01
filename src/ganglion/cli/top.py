"""``ganglion top``: the fleet's minimap in the terminal, live, until ``q`` or Ctrl-C; below
it the recent runs and the newest one's timeline (:mod:`ganglion.cli.runs_panel`)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ganglion.cli.neuron import STATUS_STYLE
from ganglion.cli.options import DEFAULT_GATEWAY, ApiKeyOption, GatewayOption, gateway_client
from ganglion.cli.runs_panel import RUNS_SHOWN, runs_panel
from ganglion.errors import GatewayError

if TYPE_CHECKING:
    from ganglion.client import GatewayClient
    from ganglion.orchestra.view import RunView

BAR_WIDTH = 16
REASONS_SHOWN = 8
STATUS_ORDER = ("active", "degraded", "suspended", "offline")


def register(app: typer.Typer) -> None:
    app.command("top")(top)


def top(
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
    interval: Annotated[
        float, typer.Option(min=0.2, help="Seconds between refreshes.", show_default=True)
    ] = 1.0,
) -> None:
    """Watch the fleet and its runs live. q quits.

    Every neuron by node, its status, speed and load; below them the recent runs, and the
    newest run's timeline: the outline, the opening, each part and the closing as bars on
    one time axis, and the first answer token."""
    console = Console()
    views: list[dict[str, Any]] = []
    runs: list[RunView] = []
    latest: RunView | None = None
    with (
        gateway_client(gateway, api_key) as client,
        keypresses() as read_key,
        Live(console=console, screen=True, auto_refresh=False) as live,
        contextlib.suppress(KeyboardInterrupt),
    ):
        while True:
            error = None
            try:
                views = client.request("GET", "/fleet/neurons")
                runs, latest = recent_runs(client)
            except GatewayError as failure:
                error = str(failure)
            frame = render(views, gateway=client.url, error=error, runs=runs, latest=latest)
            live.update(frame, refresh=True)
            if read_key(interval) in ("q", "Q"):
                return


def recent_runs(client: GatewayClient) -> tuple[list[RunView], RunView | None]:
    """The newest runs, and the newest one whole (a listing leaves its delegations out)."""
    from ganglion.orchestra.view import RunView

    runs = [
        RunView.model_validate(r) for r in client.request("GET", f"/fleet/runs?limit={RUNS_SHOWN}")
    ]
    if not runs:
        return runs, None
    return runs, RunView.model_validate(client.request("GET", f"/fleet/runs/{runs[0].id}"))


@contextlib.contextmanager
def keypresses() -> Iterator[Any]:
    """A ``read(timeout) -> key or None`` function; the terminal is restored on exit."""
    if not sys.stdin.isatty():

        def wait(timeout: float) -> str | None:
            time.sleep(timeout)
            return None

        yield wait
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # keys arrive one by one, unechoed; Ctrl-C still interrupts

    def read(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="ignore") if ready else None

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# rendering: a pure function of the views, so it is tested without a terminal


def render(
    views: list[dict[str, Any]],
    *,
    gateway: str,
    error: str | None = None,
    now: datetime | None = None,
    runs: Sequence[RunView] = (),
    latest: RunView | None = None,
) -> RenderableType:
    scale = max((view.get("tokens_per_second") or 0.0 for view in views), default=0.0)
    parts: list[RenderableType] = [header(views, gateway, now or datetime.now())]
    if error:
        parts.append(Text(f" {error} (retrying)", style="bold red"))
    if not views:
        parts.append(Text("\n no neurons yet: add one with 'ganglion neuron add URL'", "dim"))
    parts.extend(problems(views))
    panels = [node_panel(node, group, scale) for node, group in by_node(views).items()]
    parts.append(Columns(panels, padding=(0, 1)))
    parts.extend(runs_panel(runs, latest))
    return Group(*parts)


def header(views: list[dict[str, Any]], gateway: str, now: datetime) -> Text:
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for view in views:
        counts[view["status"]] = counts.get(view["status"], 0) + 1
    serving = sum(view.get("tokens_per_second") or 0 for view in views if view["is_active"])
    text = Text.assemble((" ganglion top ", "bold reverse"), "  ", (gateway, "cyan"), "  ")
    text.append(f"{len(views)} neurons: ")
    shown = [status for status in STATUS_ORDER if counts[status]]
    for index, status in enumerate(shown):
        text.append(f"{counts[status]} {status}", STATUS_STYLE.get(status, ""))
        text.append(", " if index < len(shown) - 1 else "")
    text.append(f"   {serving:.1f} tok/s", "bold")
    text.append(f"   {now:%H:%M:%S}   q quits", "dim")
    return text


def problems(views: list[dict[str, Any]]) -> list[RenderableType]:
    """One line per neuron that is not active, with its reason."""
    down = [view for view in views if view["status"] != "active"]
    if not down:
        return []
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1), expand=True)
    table.add_column("name", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason", no_wrap=True, overflow="ellipsis", ratio=1)
    for view in down[:REASONS_SHOWN]:
        table.add_row(
            f" {view['name']}",
            Text(view["status"], STATUS_STYLE.get(view["status"], "")),
            Text(view.get("reason") or "", "dim"),
        )
    parts: list[RenderableType] = [table]
    if len(down) > REASONS_SHOWN:
        parts.append(Text(f"  … and {len(down) - REASONS_SHOWN} more not active", "dim"))
    return parts


def by_node(views: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for view in sorted(views, key=lambda v: (v["node"], v["name"])):
        groups.setdefault(view["node"], []).append(view)
    return groups


def node_panel(node: str, views: list[dict[str, Any]], scale: float) -> Panel:
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column("name", no_wrap=True, max_width=24, overflow="ellipsis")
    table.add_column("status", no_wrap=True, width=9)
    table.add_column("gauge", no_wrap=True, width=BAR_WIDTH)
    table.add_column("tok/s", justify="right", no_wrap=True, width=6)
    table.add_column("busy", justify="right", no_wrap=True)
    for view in views:
        table.add_row(
            view["name"],
            Text(view["status"], STATUS_STYLE.get(view["status"], "")),
            gauge(view, scale),
            speed(view),
            f"{view['in_flight']}/{view.get('slots') or 1}",
        )
    serving = sum(view.get("tokens_per_second") or 0 for view in views if view["is_active"])
    summary = f" · {len(views)} · {serving:.0f} tok/s"
    title = Text.assemble((node, "bold white"), (summary, "grey62"))
    return Panel(table, title=title, title_align="left", border_style="grey37", expand=False)


def gauge(view: dict[str, Any], scale: float) -> Text:
    tps = view.get("tokens_per_second")
    if not view["is_active"] or tps is None or scale <= 0:
        return Text("·" * BAR_WIDTH, "grey23")
    filled = max(1, round(BAR_WIDTH * min(1.0, tps / scale)))
    colour = STATUS_STYLE.get(view["status"], "white")
    return Text.assemble(("━" * filled, colour), ("─" * (BAR_WIDTH - filled), "grey30"))


def speed(view: dict[str, Any]) -> str:
    tps = view.get("tokens_per_second")
    if not view["is_active"] or tps is None:
        return "-"
    return f"{tps:.1f}"
