"""``ganglion run`` and ``ganglion runs``: spend the whole fleet on one task, and read the
record of past runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ganglion.cli.options import (
    DEFAULT_GATEWAY,
    ApiKeyOption,
    GatewayOption,
    JsonOption,
    gateway_client,
)

if TYPE_CHECKING:
    from rich.progress import TaskID

    from ganglion.client import GatewayClient
    from ganglion.orchestra.view import RunView

runs_app = typer.Typer(help="The record of orchestrated runs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(runs_app, name="runs")


def run(
    task: Annotated[str, typer.Argument(help="The task, in words.")],
    brain: Annotated[
        str | None, typer.Option(help="Model that plans and synthesizes; default: --model.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Workers' model; default: the most served one.")
    ] = None,
    policy: Annotated[
        str,
        typer.Option(help="speed (earliest finish, default), round-robin or fastest (to compare)."),
    ] = "speed",
    max_subtasks: Annotated[int, typer.Option(min=2, max=32, help="At most this many.")] = 4,
    decompose: Annotated[
        str,
        typer.Option(
            help="auto: split only when it beats the fastest neuron alone; always; never."
        ),
    ] = "auto",
    synthesis: Annotated[
        str,
        typer.Option(
            help="stitch: the parts in order under headings, with an opening and a closing "
            "(default); rewrite: the brain rewrites the whole answer from the parts."
        ),
    ] = "stitch",
    answer_tokens: Annotated[
        int, typer.Option(min=64, max=8192, help="How long the whole answer may be, in tokens.")
    ] = 512,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run TASK on the whole fleet: split it, work in parallel, combine.

    The brain streams an outline, and each section goes to a neuron the moment its heading
    is written, sized to that neuron's speed so all finish together; the answer is the
    sections in order, with an opening and a closing, streamed as they complete. When
    splitting cannot beat the fastest neuron alone, one neuron answers directly. Shows each
    delegation live, then the answer and where the time went."""
    body = {
        "task": task,
        "brain": brain,
        "model": model,
        "policy": policy,
        "max_subtasks": max_subtasks,
        "decompose": decompose,
        "synthesis": synthesis,
        "answer_tokens": answer_tokens,
    }
    with gateway_client(gateway, api_key) as client:
        started = client.request("POST", "/fleet/runs", json_body=body)
        final = follow(client, started["id"], quiet=as_json)
    if as_json:
        print(json.dumps(final, indent=2))
    else:
        show(final)
    if final["status"] != "completed":
        raise typer.Exit(1)


def follow(client: GatewayClient, run_id: str, *, quiet: bool) -> dict[str, Any]:
    """Live progress from the run's events; the final record."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bars: dict[int, TaskID] = {}
    answering = False
    final: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet, transient=True) as progress:
        for event in client.events(f"/fleet/runs/{run_id}/events"):
            kind = event["type"]
            if kind in ("run", "done"):
                final = event["run"]
                for d in final.get("delegations") or []:
                    if d["index"] not in bars:
                        label = f"#{d['index']} {d['neuron'] or '?'}"
                        bars[d["index"]] = progress.add_task(label, total=1, state=d["status"])
            elif kind == "delegation" and event["index"] in bars:
                bar = bars[event["index"]]
                state = event.get("status", "")
                label = f"#{event['index']} {event.get('neuron') or ''}".strip()
                done = 1 if state == "completed" else 0
                progress.update(bar, completed=done, state=state, description=label)
            elif kind == "answer" and not quiet:
                if not answering:
                    progress.stop()
                    answering = True
                Console(soft_wrap=True).print(event["text"], end="", highlight=False)
            elif kind == "answer_restart" and answering:
                print()
                note = f"(the answer broke off; starting again: {event['reason']})"
                console.print(note, highlight=False, markup=False)
            if kind == "done":
                break
    if answering:
        print()
    return final


def show(record: dict[str, Any]) -> None:
    view = read_view(record)
    console = Console(soft_wrap=True)
    if view.status != "completed":
        console.print(f"[red]run {view.status}:[/] {view.reason}", highlight=False)
        return
    console.print()
    console.print(time_table(view))


def read_view(record: dict[str, Any]) -> RunView:
    """The gateway's JSON as the typed run view (pydantic is loaded here, not at start)."""
    from ganglion.orchestra.view import RunView

    return RunView.model_validate(record)


def time_table(view: RunView) -> Table:
    timings, schedule, baseline = view.timings, view.schedule, view.baseline
    how = f"{view.mode}, {view.synthesis}" if view.mode == "decomposed" else view.mode
    table = Table(title=f"run {view.id[:8]}: {how}", box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("decompose", _seconds(timings.decompose_s))
    table.add_row("parallel", _seconds(timings.parallel_s))
    table.add_row("synthesize", _seconds(timings.synthesize_s))
    table.add_row("total", _seconds(timings.total_s))
    table.add_row("first token", _seconds(timings.first_token_s))
    if timings.predicted_finish_s is not None:
        table.add_row("predicted total", _seconds(timings.predicted_finish_s))
    table.add_row("lower bound", _seconds(schedule.lower_bound_s))
    table.add_row("predicted", _seconds(schedule.predicted_s))
    table.add_row("efficiency", f"{schedule.efficiency:.0%}" if schedule.efficiency else "-")
    table.add_row(f"solo on {baseline.neuron or '?'}", _seconds(baseline.estimated_solo_s))
    speedup = view.speedup_estimate
    table.add_row("speed-up", f"{speedup:.2f}x" if speedup else "-")
    if view.reason:
        table.add_row("why", view.reason)
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


@runs_app.command("list")
def list_runs(
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """The most recent runs, newest first."""
    with gateway_client(gateway, api_key) as client:
        views = client.request("GET", "/fleet/runs")
    if as_json:
        print(json.dumps(views, indent=2))
        return
    if not views:
        Console().print('no runs yet: try ganglion run "TASK"')
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATUS", "MODE", "TOTAL", "SPEED-UP", "TASK"):
        table.add_column(column, overflow="fold")
    for v in map(read_view, views):
        table.add_row(
            v.id[:8],
            v.status,
            v.mode or "-",
            _seconds(v.timings.total_s),
            f"{v.speedup_estimate:.2f}x" if v.speedup_estimate else "-",
            v.task[:60],
        )
    Console().print(table)


@runs_app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="A run id (from runs list).")],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One run: the answer, each delegation, and where the time went."""
    with gateway_client(gateway, api_key) as client:
        view = client.request("GET", f"/fleet/runs/{run_id}")
    if as_json:
        print(json.dumps(view, indent=2))
        return
    run = read_view(view)
    console = Console(soft_wrap=True)
    console.print(f"[bold]task:[/] {run.task}", highlight=False)
    if run.answer:
        console.print(run.answer, highlight=False)
    table = Table(box=None, header_style="bold")
    for column in ("#", "NEURON", "STATUS", "ATTEMPTS", "TOKENS", "SECONDS", "TOK/S"):
        table.add_column(column)
    for d in run.delegations or []:
        table.add_row(
            str(d.index),
            d.neuron or "-",
            d.status,
            str(d.attempts),
            str(d.tokens or "-"),
            _seconds(d.seconds),
            f"{d.tokens_per_second:.1f}" if d.tokens_per_second else "-",
        )
    if run.delegations:
        console.print(table)
    console.print(time_table(run))


@runs_app.command("cancel")
def cancel_run(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="A running run's id.")],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
) -> None:
    """Stop a running run. Finished delegations keep their answers."""
    with gateway_client(gateway, api_key) as client:
        view = client.request("POST", f"/fleet/runs/{run_id}/cancel")
    cancelled = sum(d["status"] == "cancelled" for d in view["delegations"] or [])
    Console().print(f"run {run_id} cancelled ({cancelled} delegation(s) stopped)")
