"""``ganglion bench``: measure each neuron's decode speed with a short fixed generation."""

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
    from ganglion.client import GatewayClient


def register(app: typer.Typer) -> None:
    app.command("bench", short_help="Measure each neuron's speed with a short fixed generation.")(
        bench
    )


def bench(
    names: Annotated[
        list[str] | None, typer.Argument(help="Neurons to bench; default all active.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Tokens to generate per model (default 64).")
    ] = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a short fixed generation on every model of each neuron and record its speed.

    Nodes are benched in parallel; on one node, one model at a time, so neurons that share
    a machine do not skew each other's numbers.
    The results become speed samples: routing and `neuron list` use them at once.
    """
    body = {"neurons": names or [], "max_tokens": max_tokens}
    with gateway_client(gateway, api_key) as client:
        results = run_with_progress(client, body, quiet=as_json)
    if as_json:
        print(json.dumps(results, indent=2))
        return
    Console().print(results_table(results))
    if any(not result["ok"] for result in results):
        raise typer.Exit(1)


def run_with_progress(
    client: GatewayClient, body: dict[str, Any], *, quiet: bool
) -> list[dict[str, Any]]:
    from rich.progress import (  # here: loading it costs every other command 30 ms
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    results: list[dict[str, Any]] = []
    columns = (
        TextColumn("bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=Console(stderr=True), disable=quiet, transient=True) as bar:
        task = bar.add_task("", total=None)
        for event in client.stream("POST", "/fleet/bench?stream=true", json_body=body):
            if event["event"] == "plan":
                bar.update(task, total=event["total"])
            elif event["event"] == "start":
                bar.update(task, description=f"{event['neuron']} / {event['model']}")
            elif event["event"] == "result":
                results.append(event["result"])
                bar.advance(task)
    return results


def results_table(results: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("NEURON", "MODEL", "TOK/S", "TOKENS", "TTFT", "RESULT"):
        table.add_column(
            column, justify="right" if column in ("TOK/S", "TOKENS", "TTFT") else "left"
        )
    for r in results:
        tps = r.get("tokens_per_second")
        ttft = r.get("ttft_s")
        table.add_row(
            r["neuron"],
            r["model"],
            f"{tps:.1f}" if tps else "-",
            str(r.get("output_tokens") or "-"),
            f"{ttft:.2f}s" if ttft is not None else "-",
            "[green]ok[/]" if r["ok"] else f"[red]failed:[/] {r['error']}",
        )
    return table
