"""The orchestrator against the fastest neuron answering alone, on three fleets, in one run.

Each fleet is simulated neurons on loopback: workers serving ``bench-model``, and a brain of
its own serving ``brain-model`` that answers the planning request with a scripted outline
(``ganglion sim --structured-reply``: ``--sections`` headings of 2 to 5 words, as the
outline prompt asks; ``--long-headings`` for longer ones). A fresh gateway registers and
benches them, then runs the same task (an answer of ``--answer-tokens``) one way after the
other:

- ``direct``: ``decompose: "never"``, the fastest worker answers alone: the reference;
- ``stitch``: ``decompose: "always"``, the pipeline (outline streamed, parts sized to speed,
  the answer stitched);
- ``auto``: the default, which splits only when the pipeline is predicted to win.

The table shows each run's record as the gateway wrote it: the outline (decompose), the
parts (parallel), the wait for the closing after the last part (synth), the total, the
first answer token, the lower bound LB of the parts and efficiency = LB / parallel, and the
direct run's total as a ratio of this run's (x direct > 1: faster). One first token is too
noisy to compare by a few hundredths of a second, so each kind of run is then started
``--first-token-samples`` more times, interleaved with the others, and cancelled at its
first answer event (seen by a client following the run's events): the table gives the
median and its difference from the direct run's (negative: the split run's answer starts
sooner).

    .venv/bin/python benchmarks/orchestra.py
    .venv/bin/python benchmarks/orchestra.py --fleet even4 --answer-tokens 360 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _fleet import Fleet, Gateway, heading, machine_note, run_main

MODEL = "bench-model"
BRAIN = "brain-model"
# name -> (the brain's speed, the workers' speeds)
FLEETS: dict[str, tuple[float, dict[str, float]]] = {
    "even4": (20.0, {f"w{i}": 20.0 for i in range(4)}),
    "even8": (20.0, {f"w{i}": 20.0 for i in range(8)}),
    "seed": (90.0, {"gpu": 90.0, "cpu": 13.0, "quadro": 5.8, "old": 5.5}),
}
RUNS: dict[str, str] = {"direct": "never", "stitch": "always", "auto": "auto"}
# The outline the brain is scripted to write: headings of 2 to 5 words, as the outline
# prompt asks (stitch.HEADING_WORDS); ``--long-headings`` scripts headings twice as long.
SECTIONS = [
    "The inner planets",
    "The gas giants",
    "The ice giants",
    "Dwarf planets",
    "Moons worth knowing",
    "Planetary rings",
    "How planets formed",
    "How we explore them",
]
LONG_SECTIONS = [
    "The inner planets: Mercury, Venus, Earth and Mars",
    "The gas giants: Jupiter and Saturn",
    "The ice giants: Uranus and Neptune",
    "The dwarf planets and the Kuiper belt",
    "Moons worth knowing",
    "Rings and what they are made of",
    "How the planets formed",
    "How we explore them",
]
RUN_TIMEOUT_S = 600.0
SETTLE_S = 0.5  # after a cancelled run, for the neurons to see their streams closed


@dataclass
class Outcome:
    fleet: str
    run: str
    status: str
    mode: str | None
    reason: str | None
    decompose_s: float | None
    parallel_s: float | None
    synthesize_s: float | None
    total_s: float | None
    first_token_s: float | None
    predicted_s: float | None
    lower_bound_s: float | None
    efficiency: float | None
    delegations: dict[str, int]
    x_direct: float | None = None
    first_vs_direct: float | None = None
    first_token_samples: list[float] = field(default_factory=list)
    first_token_median_s: float | None = None


def outline(sections: int, long: bool = False) -> str:
    return json.dumps({"subtasks": (LONG_SECTIONS if long else SECTIONS)[:sections]})


def run_body(decompose: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "task": "Describe the planets of the solar system",
        "model": MODEL,
        "brain": BRAIN,
        "decompose": decompose,
        "max_subtasks": args.sections,
        "answer_tokens": args.answer_tokens,
    }


def first_token(gateway: Gateway, decompose: str, args: argparse.Namespace) -> float:
    """Seconds from sending a run to its first ``answer`` event, seen by a client following
    the run's events; the run is then cancelled, and the fleet given time to settle."""
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        began = time.perf_counter()
        started = http.post("/fleet/runs", json=run_body(decompose, args))
        started.raise_for_status()
        run_id = started.json()["id"]
        try:
            with http.stream("GET", f"/fleet/runs/{run_id}/events") as events:
                for line in events.iter_lines():
                    if line == "event: answer":
                        return time.perf_counter() - began
                    if line == "event: done":
                        break
            raise RuntimeError(f"run {run_id} ended without an answer")
        finally:
            http.post(f"/fleet/runs/{run_id}/cancel")
            time.sleep(SETTLE_S)


def run_once(gateway: Gateway, decompose: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start a run, wait for its end, and return its record."""
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        started = http.post("/fleet/runs", json=run_body(decompose, args))
        started.raise_for_status()
        run_id = started.json()["id"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            view: dict[str, Any] = http.get(f"/fleet/runs/{run_id}").json()
            if view["status"] != "running":
                return view
            time.sleep(0.2)
    raise TimeoutError(f"run {run_id} still running after {RUN_TIMEOUT_S:.0f} s")


def outcome(fleet: str, name: str, view: dict[str, Any]) -> Outcome:
    timings, schedule = view["timings"], view["schedule"]
    used: dict[str, int] = {}
    for delegation in view.get("delegations") or []:
        neuron = delegation["neuron"] or "?"
        used[neuron] = used.get(neuron, 0) + 1
    return Outcome(
        fleet=fleet,
        run=name,
        status=view["status"],
        mode=view["mode"],
        reason=view["reason"],
        decompose_s=timings.get("decompose_s"),
        parallel_s=timings.get("parallel_s"),
        synthesize_s=timings.get("synthesize_s"),
        total_s=timings.get("total_s"),
        first_token_s=timings.get("first_token_s"),
        predicted_s=timings.get("predicted_finish_s"),
        lower_bound_s=schedule.get("lower_bound_s"),
        efficiency=schedule.get("efficiency"),
        delegations=used,
    )


def measure(fleet: Fleet, name: str, args: argparse.Namespace) -> list[Outcome]:
    brain_tps, speeds = FLEETS[name]
    sims = {neuron: fleet.sim(tps, model=MODEL, name=neuron) for neuron, tps in speeds.items()}
    script = ["--structured-reply", outline(args.sections, args.long_headings)]
    sims["brain"] = fleet.sim(brain_tps, model=BRAIN, name="brain", extra=script)
    gateway = fleet.gateway()
    try:
        for neuron, sim in sims.items():
            gateway.add(sim.url, neuron)
        gateway.bench()
        outcomes = [outcome(name, run, run_once(gateway, RUNS[run], args)) for run in args.runs]
        for _ in range(args.first_token_samples):  # interleaved, so drift hits every run alike
            for o in outcomes:
                o.first_token_samples.append(round(first_token(gateway, RUNS[o.run], args), 3))
    finally:
        gateway.stop()
        for sim in sims.values():
            sim.stop()
    for o in outcomes:
        o.first_token_median_s = statistics.median(o.first_token_samples or [o.first_token_s or 0])
    direct = next((o for o in outcomes if o.run == "direct"), None)
    for o in outcomes:
        if direct and direct.total_s and o.total_s:
            o.x_direct = round(direct.total_s / o.total_s, 2)
        if direct and direct.first_token_median_s and o.first_token_median_s:
            o.first_vs_direct = round(o.first_token_median_s - direct.first_token_median_s, 3)
    return outcomes


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(outcomes: list[Outcome]) -> str:
    head = ["run", "mode", "decomp s", "parallel s", "synth s", "total s", "first tok s"]
    head += ["pred s", "LB s", "eff", "x direct", "first tok p50 s", "p50 - direct"]
    head += ["delegations"]
    rows = [
        [
            o.run,
            o.mode or o.status,
            _s(o.decompose_s),
            _s(o.parallel_s),
            _s(o.synthesize_s),
            _s(o.total_s),
            _s(o.first_token_s),
            _s(o.predicted_s),
            _s(o.lower_bound_s),
            "-" if o.efficiency is None else f"{o.efficiency:.0%}",
            "-" if o.x_direct is None else f"{o.x_direct:.2f}x",
            _s(o.first_token_median_s, 3),
            "-" if o.first_vs_direct is None else f"{o.first_vs_direct:+.3f}",
            " ".join(f"{n}:{c}" for n, c in sorted(o.delegations.items())) or "-",
        ]
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = []
    for row in [head, *rows]:
        cells = [
            cell.ljust(width) if i in (0, 1, len(head) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sections", type=int, default=8, help="headings in the brain's outline (8)"
    )
    parser.add_argument(
        "--long-headings",
        action="store_true",
        help="script headings of 4 to 9 words, longer than the outline prompt asks for",
    )
    parser.add_argument(
        "--answer-tokens", type=int, default=360, help="the answer's budget in tokens (360)"
    )
    parser.add_argument(
        "--fleet", action="append", choices=FLEETS, help="a fleet to measure (repeat; default all)"
    )
    parser.add_argument(
        "--run", dest="runs", action="append", choices=RUNS, help="a run (repeat; default all)"
    )
    parser.add_argument(
        "--first-token-samples",
        type=int,
        default=11,
        help="runs of each kind started and cancelled at their first answer token, "
        "interleaved, for the median time to first token (11)",
    )
    parser.add_argument("--logs", type=Path, help="keep process logs and databases here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if not 2 <= args.sections <= len(SECTIONS):
        parser.error(f"--sections must be between 2 and {len(SECTIONS)}")
    args.runs = args.runs or list(RUNS)
    if "direct" not in args.runs:
        args.runs.insert(0, "direct")  # the reference for the ratios
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    results: dict[str, list[Outcome]] = {}
    with Fleet(args.logs) as fleet:
        for name in args.fleet or list(FLEETS):
            if not args.json:
                print(f"{name} fleet: starting, benching, running", file=sys.stderr)
            results[name] = measure(fleet, name, args)
    wall = round(time.perf_counter() - started, 1)
    if args.json:
        report = {
            **heading("orchestra"),
            "sections": args.sections,
            "long_headings": args.long_headings,
            "answer_tokens": args.answer_tokens,
            "fleets": {name: FLEETS[name] for name in results},
            "wall_s": wall,
            "results": {name: [asdict(o) for o in rows] for name, rows in results.items()},
        }
        print(json.dumps(report, indent=2))
    else:
        for name, rows in results.items():
            brain_tps, speeds = FLEETS[name]
            print(f"{name}: brain {brain_tps:g} tok/s, workers {speeds} tok/s")
            print(table(rows))
            for o in rows:
                if o.reason:
                    print(f"  {o.run}: {o.reason}")
            print()
        print(f"({machine_note()}; answers of {args.answer_tokens} tokens; {wall} s in all)")
    failed = [o for rows in results.values() for o in rows if o.status != "completed"]
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
