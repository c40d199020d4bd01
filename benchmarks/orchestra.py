"""Orchestrator policies side by side: the same task, the same scripted plan, on two fleets.

For each fleet (the seed fleet of 90, 13, 5.8 and 5.5 tok/s, and an even fleet of four
20 tok/s neurons) simulated neurons are started on loopback, each answering the brain's
planning request with the same scripted plan (``ganglion sim --structured-reply``:
``--subtasks`` subtasks of ``--tokens`` tokens each). A fresh gateway registers and benches
them, then runs the task four times, one after the other:

- ``speed``, ``round-robin`` and ``fastest`` with ``decompose: "always"``: the same plan
  scheduled three ways;
- ``auto``: ``policy: "speed"`` with ``decompose: "auto"``, the default, which answers
  directly (the fastest neuron, a 512-token budget) when splitting cannot win.

The table shows each run's record as the gateway wrote it (decompose, parallel, synthesize
and total seconds; the lower bound LB and the predicted parallel phase; efficiency =
LB / parallel), its total as a ratio of ``speed``'s total, and as a ratio of
``baseline.estimated_solo_s`` (the fastest neuron producing the same output tokens alone).

    .venv/bin/python benchmarks/orchestra.py
    .venv/bin/python benchmarks/orchestra.py --subtasks 8 --tokens 40 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from _fleet import Fleet, Gateway, heading, machine_note, run_main

MODEL = "bench-model"
FLEETS: dict[str, dict[str, float]] = {
    "seed": {"gpu": 90.0, "cpu": 13.0, "quadro": 5.8, "old": 5.5},
    "even": {"w0": 20.0, "w1": 20.0, "w2": 20.0, "w3": 20.0},
}
# name -> (policy, decompose)
RUNS: dict[str, tuple[str, str]] = {
    "speed": ("speed", "always"),
    "round-robin": ("round-robin", "always"),
    "fastest": ("fastest", "always"),
    "auto": ("speed", "auto"),
}
RUN_TIMEOUT_S = 600.0


@dataclass
class Outcome:
    fleet: str
    run: str
    policy: str
    decompose_mode: str
    status: str
    mode: str | None
    reason: str | None
    decompose_s: float | None
    parallel_s: float | None
    synthesize_s: float | None
    total_s: float | None
    lower_bound_s: float | None
    predicted_s: float | None
    efficiency: float | None
    solo_s: float | None
    solo_neuron: str | None
    delegations: dict[str, int]
    vs_speed: float | None = None
    vs_solo: float | None = None


def scripted_plan(subtasks: int, tokens: int) -> str:
    items = [{"task": f"Describe planet {n}", "expected_tokens": tokens} for n in range(subtasks)]
    return json.dumps({"subtasks": items})


def run_once(gateway: Gateway, policy: str, decompose: str, max_subtasks: int) -> dict[str, Any]:
    """Start a run, wait for its end, and return its record."""
    body = {
        "task": "Describe the planets of the solar system",
        "model": MODEL,
        "policy": policy,
        "decompose": decompose,
        "max_subtasks": max_subtasks,
    }
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        started = http.post("/fleet/runs", json=body)
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
    policy, decompose = RUNS[name]
    timings, schedule, baseline = view["timings"], view["schedule"], view["baseline"]
    used: dict[str, int] = {}
    for delegation in view.get("delegations") or []:
        neuron = delegation["neuron"] or "?"
        used[neuron] = used.get(neuron, 0) + 1
    total, solo = timings.get("total_s"), baseline.get("estimated_solo_s")
    return Outcome(
        fleet=fleet,
        run=name,
        policy=policy,
        decompose_mode=decompose,
        status=view["status"],
        mode=view["mode"],
        reason=view["reason"],
        decompose_s=timings.get("decompose_s"),
        parallel_s=timings.get("parallel_s"),
        synthesize_s=timings.get("synthesize_s"),
        total_s=total,
        lower_bound_s=schedule.get("lower_bound_s"),
        predicted_s=schedule.get("predicted_s"),
        efficiency=schedule.get("efficiency"),
        solo_s=solo,
        solo_neuron=baseline.get("neuron"),
        delegations=used,
        vs_solo=round(total / solo, 2) if total and solo else None,
    )


def measure(fleet: Fleet, name: str, args: argparse.Namespace) -> list[Outcome]:
    plan = scripted_plan(args.subtasks, args.tokens)
    sims = {
        neuron: fleet.sim(tps, model=MODEL, name=neuron, extra=["--structured-reply", plan])
        for neuron, tps in FLEETS[name].items()
    }
    gateway = fleet.gateway()
    try:
        for neuron, sim in sims.items():
            gateway.add(sim.url, neuron)
        gateway.bench()
        outcomes = []
        for run in args.runs:
            policy, decompose = RUNS[run]
            view = run_once(gateway, policy, decompose, args.subtasks)
            outcomes.append(outcome(name, run, view))
    finally:
        gateway.stop()
        for sim in sims.values():
            sim.stop()
    reference = next((o.total_s for o in outcomes if o.run == "speed"), None)
    for o in outcomes:
        if o.total_s and reference:
            o.vs_speed = round(o.total_s / reference, 2)
    return outcomes


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(outcomes: list[Outcome]) -> str:
    head = [
        "run",
        "mode",
        "decomp s",
        "parallel s",
        "synth s",
        "total s",
        "LB s",
        "pred s",
        "eff",
        "solo s",
        "x speed",
        "x solo",
        "delegations",
    ]
    rows = [
        [
            o.run,
            o.mode or o.status,
            _s(o.decompose_s),
            _s(o.parallel_s),
            _s(o.synthesize_s),
            _s(o.total_s),
            _s(o.lower_bound_s),
            _s(o.predicted_s),
            "-" if o.efficiency is None else f"{o.efficiency:.0%}",
            _s(o.solo_s),
            _x(o.vs_speed),
            _x(o.vs_solo),
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
    parser.add_argument("--subtasks", type=int, default=6, help="subtasks in the plan (6)")
    parser.add_argument("--tokens", type=int, default=60, help="expected tokens each (60)")
    parser.add_argument(
        "--fleet", action="append", choices=FLEETS, help="a fleet to measure (repeat; default both)"
    )
    parser.add_argument(
        "--run", dest="runs", action="append", choices=RUNS, help="a run (repeat; default all)"
    )
    parser.add_argument("--logs", type=Path, help="keep process logs and databases here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if not 2 <= args.subtasks <= 32:
        parser.error("--subtasks must be between 2 and 32")
    args.runs = args.runs or list(RUNS)
    if "speed" not in args.runs:
        args.runs.insert(0, "speed")  # the reference for the ratios
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    results: dict[str, list[Outcome]] = {}
    with Fleet(args.logs) as fleet:
        for name in args.fleet or list(FLEETS):
            if not args.json:
                print(f"{name} fleet {FLEETS[name]}: starting, benching, running", file=sys.stderr)
            results[name] = measure(fleet, name, args)
    wall = round(time.perf_counter() - started, 1)
    if args.json:
        report = {
            **heading("orchestra"),
            "plan": {"subtasks": args.subtasks, "expected_tokens": args.tokens},
            "fleets": {name: FLEETS[name] for name in results},
            "wall_s": wall,
            "results": {name: [asdict(o) for o in rows] for name, rows in results.items()},
        }
        print(json.dumps(report, indent=2))
    else:
        for name, rows in results.items():
            print(f"{name} fleet {FLEETS[name]} tok/s; plan {args.subtasks} x {args.tokens} tokens")
            print(table(rows))
            for o in rows:
                if o.reason:
                    print(f"  {o.run}: {o.reason}")
            print()
        print(f"({machine_note()}; whole benchmark {wall} s)")
    failed = [o for rows in results.values() for o in rows if o.status != "completed"]
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
