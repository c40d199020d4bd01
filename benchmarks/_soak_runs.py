"""``soak.py --runs N``: the gateway's memory over many orchestrated runs.

A gateway and simulated neurons start on loopback: two workers serving ``soak-model`` and a
brain serving ``soak-brain`` that answers every outline request with three scripted
headings, each at 2,000 tok/s with 8 slots. ``--clients`` clients start runs back to back,
stitched (``decompose: always``) and direct (``never``) in turn, each answer
``--answer-tokens`` long. Three runs in four are followed through
``GET /fleet/runs/{id}/events`` to their ``done``; the fourth is only polled until it ends,
so nobody subscribes to it. Then:

1. warm-up: ``--runs-warmup`` runs; once the gateway is idle, its RSS is the baseline;
2. the runs: ``--runs`` more, while the gateway's RSS is read from ``/proc`` every second;
3. after: once the gateway is idle again, its RSS is read once more.

It prints the runs completed and not, runs per second, and the gateway's RSS warm, at its
peak and after, each as a ratio of the warm one. It exits 1 if a run did not complete, or
if RSS after the runs is more than :data:`FLAT` times the warm one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import httpx
from _fleet import Fleet, Gateway, heading, machine_note
from _proc import Sample, idle, rss_by_minute, slope_mib_per_min, watch

MODEL, BRAIN = "soak-model", "soak-brain"
OUTLINE = json.dumps({"subtasks": ["The inner planets", "The gas giants", "The ice giants"]})
NEURONS = {"w1": MODEL, "w2": MODEL, "brain": BRAIN}
TPS, SLOTS = 2000.0, 8
RUN_TIMEOUT_S = 120.0  # one run; one still running after this counts as lost
POLL_S = 0.1  # how often an unfollowed run's record is read
FLAT = 1.10  # RSS after the runs over the warm RSS: at most this


@dataclass
class RunsOptions:
    runs: int = 2000
    warmup: int = 200
    clients: int = 8
    answer_tokens: int = 64


@dataclass
class RunsReport:
    options: RunsOptions
    statuses: dict[str, int]  # final status (completed, failed, lost) -> runs
    per_s: float
    warm: Sample  # idle after the warm-up
    peak_rss_mib: float  # the most, sampled every second during the runs
    after: Sample  # idle after the runs
    rss_slope_mib_min: float
    samples: list[Sample]  # one a second during the runs

    @property
    def growth(self) -> float:
        """RSS after the runs over RSS after the warm-up."""
        return round(self.after.rss_mib / self.warm.rss_mib, 3)

    @property
    def failed(self) -> bool:
        return set(self.statuses) != {"completed"} or self.growth > FLAT


def start(fleet: Fleet) -> Gateway:
    """The gateway, its two workers and its brain, registered."""
    gateway = fleet.gateway()
    for name, model in NEURONS.items():
        extra = ["--slots", str(SLOTS)]
        extra += ["--structured-reply", OUTLINE] if model == BRAIN else []
        sim = fleet.sim(TPS, model=model, name=name, extra=extra)
        gateway.add(sim.url, name, slots=SLOTS)
    return gateway


async def one_run(http: httpx.AsyncClient, number: int, tokens: int) -> str:
    """Start run ``number`` and wait for its end: its final status, or ``lost``."""
    body = {
        "task": f"Run {number}: describe the planets of the solar system",
        "model": MODEL,
        "brain": BRAIN,
        "decompose": ("always", "never")[number % 2],
        "max_subtasks": 3,
        "answer_tokens": tokens,
    }
    try:
        started = await http.post("/fleet/runs", json=body)
        started.raise_for_status()
        run_id = started.json()["id"]
        if number % 4 == 3:
            return await poll(http, run_id)
        return await follow(http, run_id)
    except (httpx.HTTPError, ValueError, KeyError) as error:
        return f"lost ({type(error).__name__})"


async def follow(http: httpx.AsyncClient, run_id: str) -> str:
    """Read the run's events to its ``done``: the final status it carries."""
    async with http.stream("GET", f"/fleet/runs/{run_id}/events") as response:
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:") and kind == "done":
                status: str = json.loads(line.removeprefix("data:"))["run"]["status"]
                return status
    return "lost (no done event)"


async def poll(http: httpx.AsyncClient, run_id: str) -> str:
    """Read the run's record until it is no longer running: its final status."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        response = await http.get(f"/fleet/runs/{run_id}")
        response.raise_for_status()
        status: str = response.json()["status"]
        if status != "running":
            return status
        await asyncio.sleep(POLL_S)
    return "lost (still running)"


async def drive(url: str, numbers: Iterator[int], clients: int, tokens: int) -> Counter[str]:
    """``clients`` clients run the runs ``numbers`` between them: runs by final status."""
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=RUN_TIMEOUT_S, limits=limits) as http:

        async def client() -> None:
            for number in numbers:
                statuses[await one_run(http, number, tokens)] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


async def soak_runs(gateway: Gateway, pid: int, options: RunsOptions) -> RunsReport:
    """The three phases against a running gateway whose process is ``pid``."""
    url, port = gateway.url, gateway.process.port
    numbers = itertools.count()
    warmup = itertools.islice(numbers, options.warmup)
    await drive(url, warmup, options.clients, options.answer_tokens)
    warm, _ = await idle(pid, port, len(NEURONS))
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(pid, port, stop))
    started = time.perf_counter()
    runs = itertools.islice(numbers, options.runs)
    statuses = await drive(url, runs, options.clients, options.answer_tokens)
    took = time.perf_counter() - started
    stop.set()
    samples = await watcher
    after, _ = await idle(pid, port, len(NEURONS))
    return RunsReport(
        options=options,
        statuses=dict(statuses),
        per_s=round(options.runs / took, 1),
        warm=warm,
        peak_rss_mib=max(s.rss_mib for s in samples),
        after=after,
        rss_slope_mib_min=slope_mib_per_min(samples),
        samples=samples,
    )


def soak(fleet: Fleet, options: RunsOptions) -> RunsReport:
    """Start a gateway and its neurons in ``fleet`` and run the runs."""
    gateway = start(fleet)
    assert gateway.process.popen is not None
    return asyncio.run(soak_runs(gateway, gateway.process.popen.pid, options))


def text(report: RunsReport) -> str:
    o, warm, after = report.options, report.warm, report.after
    statuses = "  ".join(f"{status} {count}" for status, count in sorted(report.statuses.items()))
    return "\n".join(
        [
            f"{o.runs} orchestrated runs after {o.warmup} to warm up: {o.clients} clients, "
            f"stitched and direct in turn, {o.answer_tokens}-token answers, 3 in 4 followed",
            f"  {statuses}  ({report.per_s} runs/s)",
            f"gateway RSS {warm.rss_mib} MiB warm -> peak {report.peak_rss_mib} MiB "
            f"({report.peak_rss_mib / warm.rss_mib:.3f}x) -> {after.rss_mib} MiB idle after "
            f"({report.growth:.3f}x warm; flat means at most {FLAT:.2f}x; "
            f"slope {report.rss_slope_mib_min:+.2f} MiB/min)",
            f"gateway RSS each minute of the runs: {rss_by_minute(report.samples)} MiB",
        ]
    )


def main(args: argparse.Namespace) -> int:
    """``soak.py --runs N``: print the report (``--json``: as JSON); 1 if it failed."""
    options = RunsOptions(args.runs, args.runs_warmup, args.clients, args.answer_tokens)
    started = time.perf_counter()
    with Fleet(args.logs) as fleet:
        report = soak(fleet, options)
    wall = round(time.perf_counter() - started, 1)
    if args.json:
        document = {**heading("soak-runs"), "wall_s": wall, **asdict(report)}
        print(json.dumps(document | {"growth": report.growth}, indent=2))
    else:
        print(text(report))
        print(f"({machine_note()}; whole benchmark {wall} s)")
    return 1 if report.failed else 0
