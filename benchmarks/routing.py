"""Routing policies side by side: the same workload through a real gateway, once per policy.

A fleet of simulated neurons for one model (90, 13, 5.8 and 5.5 tok/s, one slot each) is
started on loopback. For each routing policy a fresh gateway is started with
``GANGLION_ROUTING_POLICY``, the neurons are registered and benched (so the router knows
their speeds), and ``--requests`` chat requests of ``--tokens`` output tokens are sent by
``--clients`` concurrent clients (each sends its next request when its last one is
answered). The table shows each policy's makespan (first request sent to last answer
received), its latency percentiles, where the requests went, and its makespan as a ratio
of finish-time's, all measured in the same run.

    .venv/bin/python benchmarks/routing.py
    .venv/bin/python benchmarks/routing.py --requests 60 --clients 16 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _fleet import Fleet, Gateway, heading, percentile, run_main

SEED_FLEET = {"gpu": 90.0, "cpu": 13.0, "quadro": 5.8, "old": 5.5}
POLICIES = ("finish-time", "least-busy", "round-robin")
MODEL = "bench-model"


@dataclass
class Outcome:
    policy: str
    makespan_s: float
    p50_s: float
    p95_s: float
    served: dict[str, int]
    errors: int
    measured_tps: dict[str, float]
    ratio: float | None = None
    error_samples: list[str] = field(default_factory=list)


async def workload(
    gateway: Gateway, requests: int, tokens: int, clients: int, api: str
) -> tuple[float, list[float], dict[str, int], list[str]]:
    """Send the requests; the makespan, each latency, the count per neuron, the errors."""
    todo: asyncio.Queue[int] = asyncio.Queue()
    for number in range(requests):
        todo.put_nowait(number)
    latencies: list[float] = []
    served: dict[str, int] = {}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        while not todo.empty():
            number = todo.get_nowait()
            path, body = _request(api, number, tokens)
            sent = time.perf_counter()
            response = await http.post(path, json=body)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            latencies.append(time.perf_counter() - sent)
            neuron = response.headers.get("X-Ganglion-Neuron", "?")
            served[neuron] = served.get(neuron, 0) + 1

    async with httpx.AsyncClient(base_url=gateway.url, timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        makespan = time.perf_counter() - start
    return makespan, latencies, served, errors


def _request(api: str, number: int, tokens: int) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": f"Request {number}: say something."}]
    if api == "openai":
        body = {"model": MODEL, "messages": messages, "max_tokens": tokens, "stream": False}
        return "/v1/chat/completions", body
    body = {"model": MODEL, "messages": messages, "stream": False}
    return "/api/chat", body | {"options": {"num_predict": tokens}}


def measure(fleet: Fleet, sims: dict[str, str], policy: str, args: argparse.Namespace) -> Outcome:
    env = {"GANGLION_ROUTING_POLICY": policy, "GANGLION_MAX_QUEUE": str(args.requests)}
    gateway = fleet.gateway(env=env)
    try:
        for name, url in sims.items():
            gateway.add(url, name)
        measured = gateway.bench()
        makespan, latencies, served, errors = asyncio.run(
            workload(gateway, args.requests, args.tokens, args.clients, args.api)
        )
    finally:
        gateway.stop()
    return Outcome(
        policy=policy,
        makespan_s=round(makespan, 2),
        p50_s=round(percentile(latencies, 0.5), 2),
        p95_s=round(percentile(latencies, 0.95), 2),
        served={name: served.get(name, 0) for name in sims},
        errors=len(errors),
        measured_tps={name: round(tps, 1) for name, tps in measured.items()},
        error_samples=errors[:3],
    )


def table(outcomes: list[Outcome], names: list[str]) -> str:
    head = ["policy", "makespan", "p50", "p95", *names, "errors", "x finish-time"]
    rows = [
        [
            o.policy,
            f"{o.makespan_s:.2f} s",
            f"{o.p50_s:.2f} s",
            f"{o.p95_s:.2f} s",
            *(str(o.served[n]) for n in names),
            str(o.errors),
            "-" if o.ratio is None else f"{o.ratio:.2f}",
        ]
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [head, *rows]
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=40, help="requests per policy (40)")
    parser.add_argument("--tokens", type=int, default=30, help="output tokens each (30)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        help="a policy to measure (repeat; default: all three)",
    )
    parser.add_argument("--api", choices=("ollama", "openai"), default="ollama")
    parser.add_argument("--logs", type=Path, help="keep process logs and databases here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    policies: list[str] = args.policy or list(POLICIES)
    if "finish-time" not in policies:
        policies.insert(0, "finish-time")  # the reference for the ratios

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr)

    started = time.perf_counter()
    outcomes: list[Outcome] = []
    with Fleet(args.logs) as fleet:
        say(f"starting {len(SEED_FLEET)} simulated neurons: {SEED_FLEET}")
        sims = {
            name: fleet.sim(tps, model=MODEL, name=name).url for name, tps in SEED_FLEET.items()
        }
        for policy in policies:
            say(f"{policy}: fresh gateway, bench, {args.requests} requests")
            outcomes.append(measure(fleet, sims, policy, args))
    reference = next(o.makespan_s for o in outcomes if o.policy == "finish-time")
    for outcome in outcomes:
        outcome.ratio = round(outcome.makespan_s / reference, 2) if reference else None
    report = {
        **heading("routing"),
        "fleet_tps": SEED_FLEET,
        "workload": {
            "requests": args.requests,
            "output_tokens": args.tokens,
            "clients": args.clients,
            "api": args.api,
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "results": [asdict(o) for o in outcomes],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"fleet {SEED_FLEET} tok/s, {args.requests} requests x {args.tokens} tokens, "
            f"{args.clients} clients, {args.api} API"
        )
        print(table(outcomes, list(SEED_FLEET)))
        print(f"({report['machine']}; whole benchmark {report['wall_s']} s)")
    return 1 if any(o.errors for o in outcomes) else 0


if __name__ == "__main__":
    run_main(main)
