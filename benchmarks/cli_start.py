"""How fast the CLI starts: wall time and peak memory of ``ganglion --help``,
``ganglion neuron list --json`` (against a real gateway) and ``ganglion doctor --json``, beside
``python -c pass`` and ``python -c "import ganglion"`` as references.

Each command runs as its own process (``posix_spawn`` from a lean runner, output to
``/dev/null``); its peak resident memory is the ``ru_maxrss`` that ``wait4`` reports for that
one child. The cases run
interleaved, round after round, after one warm-up round that also leaves ganglion's bytecode
cached (as an installed package has it); each number is the median over the rounds. The
targets (issue 14: at most 0.3 s and 40 MB on a 2-core machine) are printed beside them.

    .venv/bin/python benchmarks/cli_start.py [--rounds 9] [--json] [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _fleet import Fleet, heading, machine_note, run_main, show

TARGET_S = 0.3
TARGET_MB = 40.0
DEFAULT_ROUNDS = 9


@dataclass(frozen=True)
class Case:
    label: str
    argv: list[str]
    reference: bool = False


@dataclass(frozen=True)
class Sample:
    wall_s: float
    max_rss_mb: float


def cases(gateway_url: str) -> list[Case]:
    python = sys.executable
    cli = [python, "-m", "ganglion"]
    return [
        Case("python -c pass", [python, "-c", "pass"], reference=True),
        Case("python -c 'import ganglion'", [python, "-c", "import ganglion"], reference=True),
        Case("ganglion --help", [*cli, "--help"]),
        Case(
            "ganglion neuron list --json",
            [*cli, "neuron", "list", "--json", "--gateway", gateway_url],
        ),
        Case("ganglion doctor --json", [*cli, "doctor", "--json"]),
    ]


def child_environment() -> dict[str, str]:
    """This environment, with bytecode written (the warm-up round caches it) and ganglion
    found where this script's ganglion is."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    src = Path(__file__).resolve().parent.parent / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    return env


# Runs one command and prints its wall time and peak RSS. It runs in a lean interpreter of its
# own: a child forked from this process (httpx and all loaded) would report this process's
# peak, since the kernel carries the high-water mark across exec.
SPAWN = """
import json, os, sys, time
argv = json.loads(sys.argv[1])
files = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
started = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=files)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
print(json.dumps([os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss]))
"""


def measure(case: Case, env: dict[str, str]) -> Sample:
    """Run ``case`` once: its wall time and its own peak RSS (``wait4``'s ``ru_maxrss``, KiB)."""
    runner = [sys.executable, "-c", SPAWN, json.dumps(case.argv)]
    done = subprocess.run(runner, env=env, capture_output=True, text=True, check=True)
    code, wall, max_rss_kib = json.loads(done.stdout)
    if code != 0:
        raise SystemExit(f"{case.label} failed (exit {code})")
    return Sample(wall, max_rss_kib / 1024)


def run(rounds: int, logs: Path | None) -> dict[str, object]:
    env = child_environment()
    samples: dict[str, list[Sample]] = {}
    with Fleet(logs) as fleet:
        gateway = fleet.gateway()
        measured = cases(gateway.url)
        for case in measured:  # warm-up: caches bytecode, fills the page cache
            measure(case, env)
        for _ in range(rounds):
            for case in measured:
                samples.setdefault(case.label, []).append(measure(case, env))
    base = samples[measured[0].label]
    base_s = statistics.median(s.wall_s for s in base)
    rows = []
    for case in measured:
        wall = statistics.median(s.wall_s for s in samples[case.label])
        rss = statistics.median(s.max_rss_mb for s in samples[case.label])
        rows.append(
            {
                "case": case.label,
                "reference": case.reference,
                "wall_s": round(wall, 3),
                "max_rss_mb": round(rss, 1),
                "x_python": round(wall / base_s, 1),
                "within_target": None if case.reference else wall <= TARGET_S and rss <= TARGET_MB,
            }
        )
    return {**heading("cli_start"), "rounds": rounds, "rows": rows}


def print_table(result: dict[str, object]) -> None:
    rows = result["rows"]
    assert isinstance(rows, list)
    width = max(len(row["case"]) for row in rows)
    print(
        f"{'case':<{width}}  median wall  max RSS  x python  "
        f"target {TARGET_S} s, {TARGET_MB:.0f} MB"
    )
    for row in rows:
        target = (
            "" if row["within_target"] is None else ("met" if row["within_target"] else "MISSED")
        )
        print(
            f"{row['case']:<{width}}  {row['wall_s']:9.3f} s  {row['max_rss_mb']:5.1f} MB"
            f"  {row['x_python']:8.1f}  {target}"
        )
    print(f"({machine_note()}; median of {result['rounds']} interleaved rounds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="runs of each case")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--logs", type=Path, help="keep the gateway's log and database here")
    args = parser.parse_args()
    result = run(args.rounds, args.logs)
    return show(result, args.json, print_table)


if __name__ == "__main__":
    run_main(main)
