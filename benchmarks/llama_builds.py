"""llama-cpp-python builds side by side: decode speed through one gateway's ``ganglion bench``.

Each build is a Python environment that holds it (``--build NAME=PYTHON``, repeatable); the
first is ``portable``, this Python, unless given. One llama.cpp server per build is started
with the bundled SmolLM2-135M, one thread each, and warmed up; a build that dies doing so is
reported with how it died (the signal and the tail of its log) and benched no further. The
servers are registered on one node, so the gateway benches them one after another, never
contending for the cores, ``--rounds`` times. The table shows each build's median tok/s and
its ratio to the first build's, measured in the same run.

    .venv/bin/python benchmarks/llama_builds.py --build native=/tmp/native/bin/python
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx
from _fleet import Fleet, run_main

from ganglion.errors import LocalFleetError
from ganglion.llamacpp import system_info
from ganglion.local.llama import LlamaServer, model_path

NODE = "localhost"


def parse_builds(given: list[str]) -> dict[str, str]:
    builds = {"portable": sys.executable}
    for item in given:
        name, _, python = item.partition("=")
        if not name or not python:
            raise SystemExit(f"--build takes NAME=PYTHON, not {item!r}")
        builds[name] = python
    return builds


def described(python: str) -> str:
    """What the build in ``python``'s environment says it uses, or how asking failed."""
    try:
        return system_info(python)
    except LocalFleetError as error:
        return f"({error})"


def measure(builds: dict[str, str], rounds: int, tokens: int, logs: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {name: {"python": python} for name, python in builds.items()}
    with Fleet(logs) as fleet:
        gateway = fleet.gateway()
        servers: list[LlamaServer] = []
        try:
            for name, python in builds.items():
                results[name]["system_info"] = described(python)
                server = LlamaServer(model_path(), python=python, log_dir=fleet.root / name)
                try:
                    server.start()
                except LocalFleetError as error:
                    results[name]["crashed"] = str(error)
                    continue
                servers.append(server)
                body = {"url": server.url, "name": name, "api": "openai", "node": NODE}
                httpx.post(f"{gateway.url}/fleet/neurons", json=body, timeout=30).raise_for_status()
            alive = [name for name in builds if "crashed" not in results[name]]
            for _ in range(rounds):
                response = httpx.post(
                    f"{gateway.url}/fleet/bench",
                    json={"neurons": alive, "max_tokens": tokens},
                    timeout=600,
                )
                response.raise_for_status()
                for result in response.json():
                    samples = results[result["neuron"]].setdefault("tokens_per_second", [])
                    samples.append(result["tokens_per_second"] if result["ok"] else None)
        finally:
            for server in servers:
                server.stop()
    first = next(iter(builds))
    for result in results.values():
        samples = [s for s in result.get("tokens_per_second", []) if s]
        result["median_tps"] = statistics.median(samples) if samples else None
    base = results[first]["median_tps"]
    for result in results.values():
        median = result["median_tps"]
        result["x_first"] = round(median / base, 3) if median and base else None
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", default=[], metavar="NAME=PYTHON")
    parser.add_argument("--rounds", type=int, default=5, help="benches per build [5]")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per bench [64]")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs here")
    args = parser.parse_args()
    builds = parse_builds(args.build)
    results = measure(builds, args.rounds, args.tokens, args.logs)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    first = next(iter(builds))
    print(f"{args.rounds} rounds x {args.tokens} tokens, SmolLM2-135M, one thread per server")
    print(f"{'build':<10} {'median tok/s':>12} {f'x {first}':>10}  samples / outcome")
    for name, result in results.items():
        samples = " ".join(
            f"{s:.1f}" if s else "failed" for s in result.get("tokens_per_second", [])
        )
        outcome = result.get("crashed", "").splitlines()[0] if "crashed" in result else samples
        median = result["median_tps"]
        shown = f"{median:12.1f}" if median else f"{'-':>12}"
        ratio = f"{result['x_first']:10.2f}" if result["x_first"] else f"{'-':>10}"
        print(f"{name:<10} {shown} {ratio}  {outcome}")
    for name, result in results.items():
        print(f"{name}: {result['system_info']}")
    return 0


if __name__ == "__main__":
    run_main(main)
