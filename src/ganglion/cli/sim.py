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
    "the prompt at --prefill-tps (with --cache-slots, only past the longest prefix it holds from "
    "a prompt it read before), then streams tokens at min(--tps, --aggregate-tps / k) while "
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


PortOption = Annotated[
    int, typer.Option(help="TCP port to listen on; 0 takes any free port.", show_default=False)
]
ModelOption = Annotated[
    list[str],
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="A model the neuron serves (repeat for several); others answer 404.",
        show_default=False,
    ),
]
TpsOption = Annotated[
    float,
    typer.Option(
        help="Decode speed of one stream, tokens/s (e.g. 90 GPU, 5.5 CPU).", show_default=False
    ),
]
HostOption = Annotated[
    str, typer.Option(help="Address to bind; loopback only unless --allow-public.")
]
SlotsOption = Annotated[
    int, typer.Option(help="Generations run at once (OLLAMA_NUM_PARALLEL); more queue.")
]
AggregateTpsOption = Annotated[
    float | None,
    typer.Option(
        help="Decode tokens/s shared by all streams: memory bandwidth. [default: tps*slots]",
        show_default=False,
    ),
]
PrefillTpsOption = Annotated[
    float | None,
    typer.Option(
        help="Prompt reading speed, tokens/s (a token is a word). [default: 10*tps]",
        show_default=False,
    ),
]
CacheSlotsOption = Annotated[
    int,
    typer.Option(
        min=0,
        help="Prompts kept in the prompt (KV) cache, least recently used evicted first: a "
        "conversation's next turn reads only its new tokens. 0: no cache.",
    ),
]
LoadSOption = Annotated[
    float, typer.Option(help="Seconds to load each model, once, on its first request.")
]
FailRateOption = Annotated[
    float, typer.Option(help="Fraction of generations answered HTTP 500 before any byte.")
]
HangRateOption = Annotated[
    float, typer.Option(help="Fraction of generations never answered (a stuck server).")
]
StallRateOption = Annotated[
    float,
    typer.Option(
        help="Fraction of generations that stream --stall-after-tokens tokens, then stop "
        "forever (a server stuck mid-answer)."
    ),
]
StallAfterTokensOption = Annotated[
    int, typer.Option(help="Tokens a stalling generation sends before it stops.")
]
SeedOption = Annotated[
    int | None, typer.Option(help="Seed for the fault draws, to replay the same run.")
]
NameOption = Annotated[str, typer.Option(help="The neuron's name, shown in /sim/stats.")]
CountOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=20_000,
        help="Serve this many simulated neurons from one process, on --port and the ports "
        "after it (any free ports with --port 0), named NAME-0, NAME-1... Each has its own "
        "slots and log. For benchmarks and tests of large fleets.",
    ),
]
OutputTokensOption = Annotated[
    int | None,
    typer.Option(
        help="Answer length when the client sets no limit (num_predict). [default: 64]",
        show_default=False,
    ),
]
VramOption = Annotated[
    float, typer.Option(help="Share of each model /api/ps reports in VRAM (0: on the CPU).")
]
KeepAliveOption = Annotated[
    int,
    typer.Option(
        "--keep-alive",
        help="Seconds an idle client connection stays open (5, as vLLM and llama.cpp's "
        "server; Ollama keeps it until the client closes: give a large number).",
    ),
]
AllowPublicOption = Annotated[
    bool,
    typer.Option("--allow-public", help="Allow a non-loopback --host. The sim has no auth."),
]
StructuredReplyOption = Annotated[
    str | None,
    typer.Option(
        help="Text to answer every schema-constrained request with, instead of a generated "
        "instance: a brain's plan as JSON for demos and tests, or anything else for a "
        "brain that breaks its schema."
    ),
]


def sim(
    *,
    port: PortOption,
    model: ModelOption,
    tps: TpsOption,
    host: HostOption = "127.0.0.1",
    slots: SlotsOption = 1,
    aggregate_tps: AggregateTpsOption = None,
    prefill_tps: PrefillTpsOption = None,
    cache_slots: CacheSlotsOption = 0,
    load_s: LoadSOption = 0.0,
    fail_rate: FailRateOption = 0.0,
    hang_rate: HangRateOption = 0.0,
    stall_rate: StallRateOption = 0.0,
    stall_after_tokens: StallAfterTokensOption = 1,
    seed: SeedOption = None,
    name: NameOption = "sim",
    count: CountOption = 1,
    output_tokens: OutputTokensOption = None,
    vram: VramOption = 1.0,
    keep_alive: KeepAliveOption = 5,
    allow_public: AllowPublicOption = False,
    structured_reply: StructuredReplyOption = None,
) -> None:
    from ganglion.local.sim import DEFAULT_OUTPUT_TOKENS, SimConfig, run_sim

    config = SimConfig(
        models=tuple(model),
        tps=tps,
        slots=slots,
        aggregate_tps=aggregate_tps,
        prefill_tps=prefill_tps,
        cache_slots=cache_slots,
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
        vram=vram,
        keep_alive_s=keep_alive,
    )
    console = Console(highlight=False, soft_wrap=True)

    def announce(urls: list[str]) -> None:
        described = escape(config.describe())
        where = urls[0] if len(urls) == 1 else f"{len(urls)} ports, {urls[0]} to {urls[-1]}"
        console.print(f"ganglion sim [bold]{escape(name)}[/] on {where}: {described} (filler text)")

    run_sim(config, count=count, on_ready=announce)
