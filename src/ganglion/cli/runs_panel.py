"""The runs panel of ``ganglion top``: the recent runs, and the newest one's timeline drawn
in characters, one row per bar on a shared time axis: the outline, the opening, every part
on its neuron, the closing, and the first answer token. The bars overlap in time as the
stitched pipeline's work does; the dashboard's chart draws the same ``timeline``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from ganglion.orchestra.view import RunView, Span

CHART_WIDTH = 48  # characters along the time axis
RUNS_SHOWN = 5
DONE, LIVE, FIRST = "█", "▒", "▲"
RUN_STYLE = {"running": "cyan", "completed": "green", "failed": "red", "cancelled": "red"}
PART_STYLE = {"active": "cyan", "completed": "green", "failed": "red", "cancelled": "red"}
BRAIN_STYLE = "magenta"


@dataclass(frozen=True)
class Bar:
    """One row of the chart: what ran, where, from ``start_s`` to ``end_s`` (``None``: under
    way, drawn to the run's elapsed time)."""

    label: str
    neuron: str
    start_s: float | None
    end_s: float | None
    style: str


def runs_panel(runs: Sequence[RunView], latest: RunView | None) -> list[RenderableType]:
    """The recent runs, newest first, and ``latest``'s timeline; nothing without runs."""
    if not runs:
        return []
    parts: list[RenderableType] = [Text(" runs", "bold"), runs_table(runs)]
    if latest is not None:
        parts.append(chart(latest))
    return parts


def runs_table(runs: Sequence[RunView]) -> Table:
    table = Table(box=None, header_style="grey62", pad_edge=False, padding=(0, 1))
    for column in (" ID", "STATUS", "MODE", "TIME", "FIRST TOKEN", "TASK"):
        table.add_column(column, no_wrap=True)
    table.columns[-1].overflow = "ellipsis"
    table.columns[-1].max_width = 48
    for run in runs[:RUNS_SHOWN]:
        running = run.status == "running"
        took = run.timeline.elapsed_s if running else run.timings.total_s
        table.add_row(
            f" {run.id[:8]}",
            Text(run.status, RUN_STYLE.get(run.status, "")),
            run.mode or "-",
            _seconds(took) + (" so far" if running else ""),
            _seconds(run.timings.first_token_s or run.timeline.first_token_s),
            run.task,
        )
    return table


def bars(run: RunView) -> list[Bar]:
    """The chart's rows, in the order the work is laid out."""
    line, brain = run.timeline, run.brain or run.model or "brain"
    found: list[Bar] = []

    def add(label: str, neuron: str | None, span: Span | None, style: str) -> None:
        if span is not None and span.start_s is not None:
            found.append(Bar(label, neuron or "?", span.start_s, span.end_s, style))

    if run.mode == "direct":
        add("answer", run.baseline.neuron, line.parallel, PART_STYLE["completed"])
        return found
    add("outline" if run.synthesis == "stitch" else "plan", brain, line.decompose, BRAIN_STYLE)
    if line.opening is not None:
        add("opening", line.opening.neuron, line.opening, BRAIN_STYLE)
    for d in run.delegations or []:
        style = "grey50" if d.start_s is None else PART_STYLE.get(d.status, "")
        found.append(Bar(f"#{d.index}", d.neuron or "?", d.start_s, d.end_s, style))
    if line.closing is not None:
        add("closing", line.closing.neuron, line.closing, BRAIN_STYLE)
    if run.synthesis != "stitch":
        add("synthesize", brain, line.synthesize, BRAIN_STYLE)
    return found


def chart(run: RunView) -> RenderableType:
    rows = bars(run)
    now = run.timeline.elapsed_s or 0.0
    first = run.timings.first_token_s or run.timeline.first_token_s
    end = max([now, first or 0.0, *(b.end_s or b.start_s or 0.0 for b in rows)])
    how = f"{run.mode}, {run.synthesis}" if run.mode == "decomposed" else run.mode or "deciding"
    title = Text.assemble(
        (f" run {run.id[:8]}", "bold"), f" · {how} · {run.status} · ", _seconds(now)
    )
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column("what", no_wrap=True, width=10)
    table.add_column("neuron", no_wrap=True, max_width=16, overflow="ellipsis")
    table.add_column("bar", no_wrap=True, width=CHART_WIDTH)
    table.add_row(" time", "", axis(end))
    for bar in rows:
        table.add_row(f" {bar.label}", bar.neuron, track(bar, end, now))
    if first is not None:
        table.add_row(" 1st token", "", marker(first, end))
    if not rows:
        table.add_row(" ", "", Text("nothing under way yet", "dim"))
    return Group(title, table)


def column(seconds: float, end: float) -> int:
    """The character at ``seconds`` on an axis ``end`` seconds long (``CHART_WIDTH``: past
    its last)."""
    if end <= 0:
        return 0
    return min(CHART_WIDTH, max(0, int(seconds / end * CHART_WIDTH)))


def track(bar: Bar, end: float, now: float) -> Text:
    if bar.start_s is None:
        return Text("queued", "dim")
    live = bar.end_s is None
    first = min(column(bar.start_s, end), CHART_WIDTH - 1)
    stop = max(first + 1, column(now if bar.end_s is None else bar.end_s, end))
    text = Text(" " * first)
    text.append((LIVE if live else DONE) * (stop - first), bar.style)
    return text


def axis(end: float) -> Text:
    """``0 s`` at the left, the axis's length at the right."""
    right = f"{end:.1f} s"
    return Text("0 s".ljust(CHART_WIDTH - len(right)) + right, "grey62")


def marker(seconds: float, end: float) -> Text:
    at = min(column(seconds, end), CHART_WIDTH - 1)
    label = f" {seconds:.2f} s"
    text = Text(" " * at)
    text.append(FIRST, "bold yellow")
    text.append(label if at + len(label) < CHART_WIDTH else "", "yellow")
    return text


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
