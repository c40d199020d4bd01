"""``ganglion sim``: start a simulated neuron (see :mod:`ganglion.local.sim`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

HELP = (
    "Serve a simulated neuron: the Ollama and OpenAI APIs at a configured token rate.\n\n"
    "For capacity planning, dashboards without GPUs, tests and benchmarks. It never pretends "
    "to be inference: answers are filler words starting with [sim], or a valid instance of "
    "the JSON schema a client asks for.\n\n"
    "Each generation waits for a slot (first come, first served), loads its model once, reads "
    "the prompt at --prefill-tps, then streams tokens at min(--tps, --aggregate-tps / k) while "
    "k streams decode. GET /sim/log lists every request; GET /sim/stats shows the config, "
    "in-flight requests and totals."
)

EPILOG = (
    "Example, a 90 tok/s GPU box and a 5.5 tok/s CPU server:\n\n"
    "  ganglion sim --port 11501 --model llama3.1:8b --tps 90 --slots 4 --aggregate-tps 200\n\n"
    "  ganglion sim --port 11502 --model llama3.1:8b --tps 5.5 --load-s 20"
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command(
        "sim",
        help=HELP,
        short_help="Serve a simulated neuron at a configured token rate.",
        epilog=EPILOG,
    )(sim)


def sim(
    *,
    port: Annotated[
        int, typer.Option(help="TCP port to listen on; 0 takes any free port.", show_default=False)
    ],
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            metavar="NAME",
            help="A model the neuron serves (repeat for several); others answer 404.",
            show_default=False,
        ),
    ],
    tps: Annotated[
        float,
        typer.Option(
            help="Decode speed of one stream, tokens/s (e.g. 90 GPU, 5.5 CPU).", show_default=False
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback only unless --allow-public.")
    ] = "127.0.0.1",
    slots: Annotated[
        int, typer.Option(help="Generations run at once (OLLAMA_NUM_PARALLEL); more queue.")
    ] = 1,
    aggregate_tps: Annotated[
        float | None,
        typer.Option(
            help="Decode tokens/s shared by all streams: memory bandwidth. [default: tps*slots]",
            show_default=False,
        ),
    ] = None,
    prefill_tps: Annotated[
        float | None,
        typer.Option(
            help="Prompt reading speed, tokens/s (a token is a word). [default: 10*tps]",
            show_default=False,
        ),
    ] = None,
    load_s: Annotated[
        float, typer.Option(help="Seconds to load each model, once, on its first request.")
    ] = 0.0,
    fail_rate: Annotated[
        float, typer.Option(help="Fraction of generations answered HTTP 500 before any byte.")
    ] = 0.0,
    hang_rate: Annotated[
        float, typer.Option(help="Fraction of generations never answered (a stuck server).")
    ] = 0.0,
    stall_rate: Annotated[
        float,
        typer.Option(
            help="Fraction of generations that stream --stall-after-tokens tokens, then stop "
            "forever (a server stuck mid-answer)."
        ),
    ] = 0.0,
    stall_after_tokens: Annotated[
        int, typer.Option(help="Tokens a stalling generation sends before it stops.")
    ] = 1,
    seed: Annotated[
        int | None, typer.Option(help="Seed for the fault draws, to replay the same run.")
    ] = None,
    name: Annotated[str, typer.Option(help="The neuron's name, shown in /sim/stats.")] = "sim",
    output_tokens: Annotated[
        int | None,
        typer.Option(
            help="Answer length when the client sets no limit (num_predict). [default: 64]",
            show_default=False,
        ),
    ] = None,
    allow_public: Annotated[
        bool,
        typer.Option("--allow-public", help="Allow a non-loopback --host. The sim has no auth."),
    ] = False,
    structured_reply: Annotated[
        str | None,
        typer.Option(
            help="Text to answer every schema-constrained request with, instead of a generated "
            "instance: a brain's plan as JSON for demos and tests, or anything else for a "
            "brain that breaks its schema."
        ),
    ] = None,
) -> None:
    from ganglion.local.sim import DEFAULT_OUTPUT_TOKENS, SimConfig, run_sim

    config = SimConfig(
        models=tuple(model),
        tps=tps,
        slots=slots,
        aggregate_tps=aggregate_tps,
        prefill_tps=prefill_tps,
        load_s=load_s,
        fail_rate=fail_rate,
        hang_rate=hang_rate,
        stall_rate=stall_rate,
        stall_after_tokens=stall_after_tokens,
        seed=seed,
        name=name,
        host=host,
        port=port,
        allow_public=allow_public,
        output_tokens=DEFAULT_OUTPUT_TOKENS if output_tokens is None else output_tokens,
        structured=structured_reply,
    )
    console = Console(highlight=False, soft_wrap=True)

    def announce(url: str) -> None:
        described = escape(config.describe())
        console.print(f"ganglion sim [bold]{escape(name)}[/] on {url}: {described} (filler text)")

    run_sim(config, on_ready=announce)
