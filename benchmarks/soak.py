"""Soak: a real gateway under steady mixed load for a while, then past its queues.

A gateway (``ganglion serve``) and three simulated neurons (``ganglion sim``: 100 tok/s with
4 slots, 50 tok/s with 2, 20 tok/s with 1) start on loopback. The gateway lets at most
``--max-queue`` requests wait per neuron (``GANGLION_MAX_QUEUE``), so the fleet holds
``slots + 3 x max-queue`` requests at once. Then:

1. warm-up: ``--clients`` clients send requests for ``--warmup`` seconds; once the gateway is
   idle again, its open file descriptors and RSS are the baseline;
2. steady: the clients send requests back to back for ``--duration`` seconds, a mix of
   Ollama ``/api/chat`` and OpenAI ``/v1/chat/completions``, streaming and not, while the
   gateway's RSS, open fds and TCP connections are read from ``/proc`` every second;
3. after: the clients close their connections; once the gateway is idle again, its fds and
   connections are read once more;
4. saturation: three times as many clients as the fleet holds send one request each, at
   once. Those beyond are answered 503 with Retry-After; each waits as told and retries
   until it has its answer. Once the gateway is idle again, it is read a last time.

It prints requests sent, completed, lost (no answer: a transport error, a timeout, or an
answer cut off), 5xx other than 503 with Retry-After, 503 with Retry-After, latency
percentiles, RSS and fds before and after (with the RSS slope over the steady phase), the
connections left after the load, and the saturation outcome. It exits 1 if anything was
lost, failed with a 5xx other than a 503 with Retry-After, or never got its answer.

    .venv/bin/python benchmarks/soak.py                  # 60 s steady
    .venv/bin/python benchmarks/soak.py --duration 120 --clients 16 --json

``--runs N`` soaks the orchestrator instead: N orchestrated runs, the gateway's RSS after
them against its RSS after a warm-up (see ``_soak_runs.py``).

    .venv/bin/python benchmarks/soak.py --runs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import _soak_runs as soak_runs
import httpx
from _fleet import Fleet, Gateway, heading, machine_note, percentile, run_main
from _proc import Sample, idle, rss_by_minute, slope_mib_per_min, watch

MODEL = "soak-model"
FLEET: dict[str, tuple[float, int]] = {"fast": (100.0, 4), "mid": (50.0, 2), "slow": (20.0, 1)}
KINDS = ("ollama", "ollama-stream", "openai", "openai-stream")
REQUEST_TIMEOUT_S = 120.0  # one request; a hung one counts as lost after this
SATURATION_DEADLINE_S = 300.0  # every saturating client has its answer by then, or it is lost


class Outcome(StrEnum):
    OK = "ok"
    LOST = "lost"  # no answer: a transport error, a timeout, or an answer cut off
    ERROR = "5xx"  # a 5xx other than 503 with Retry-After, or an error inside a stream
    BUSY = "503"  # 503 with Retry-After: every queue is full, come back later
    REFUSED = "4xx"


@dataclass
class Answer:
    outcome: Outcome
    seconds: float
    retry_after_s: float = 0.0
    detail: str = ""


# one request


def request(kind: str, number: int, tokens: int) -> tuple[str, dict[str, Any]]:
    """The path and body of request ``number`` of ``kind`` (one of :data:`KINDS`)."""
    messages = [{"role": "user", "content": f"Request {number}: say something."}]
    stream = kind.endswith("-stream")
    if kind.startswith("openai"):
        body = {"model": MODEL, "messages": messages, "max_tokens": tokens, "stream": stream}
        return "/v1/chat/completions", body
    body = {"model": MODEL, "messages": messages, "stream": stream}
    return "/api/chat", body | {"options": {"num_predict": tokens}}


async def send(http: httpx.AsyncClient, kind: str, number: int, tokens: int) -> Answer:
    """Send one request and read its whole answer."""
    path, body = request(kind, number, tokens)
    started = time.perf_counter()
    try:
        async with http.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return refused(response, time.perf_counter() - started)
            outcome, detail = await read_answer(response, kind)
    except httpx.HTTPError as error:  # refused, reset, timed out, a body cut off
        detail = f"{type(error).__name__}: {error}"
        return Answer(Outcome.LOST, time.perf_counter() - started, detail=detail)
    return Answer(outcome, time.perf_counter() - started, detail=detail)


def refused(response: httpx.Response, seconds: float) -> Answer:
    status, retry = response.status_code, response.headers.get("retry-after")
    detail = f"{status}: {response.text[:200]}"
    if status == 503 and retry is not None:
        return Answer(Outcome.BUSY, seconds, float(retry), detail)
    return Answer(Outcome.ERROR if status >= 500 else Outcome.REFUSED, seconds, detail=detail)


async def read_answer(response: httpx.Response, kind: str) -> tuple[Outcome, str]:
    """OK for a whole answer; LOST for one cut off or malformed; ERROR for an error in it."""
    try:
        if kind.endswith("-stream"):
            return await read_stream(response)
        data = json.loads(await response.aread())
        text = data["message"]["content"] if kind == "ollama" else data["choices"][0]["message"]
        return (Outcome.OK, "") if text else (Outcome.LOST, "an empty answer")
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return Outcome.LOST, f"a malformed answer ({type(error).__name__}: {error})"


async def read_stream(response: httpx.Response) -> tuple[Outcome, str]:
    """Ollama's NDJSON ends with ``"done": true``, OpenAI's SSE with ``data: [DONE]``."""
    finished = False
    async for raw in response.aiter_lines():
        line = raw.removeprefix("data:").strip()
        if not line:
            continue
        if line == "[DONE]":
            finished = True
            continue
        data = json.loads(line)
        if "error" in data:
            return Outcome.ERROR, str(data["error"])[:200]
        finished = finished or data.get("done") is True
    return (Outcome.OK, "") if finished else (Outcome.LOST, "the stream stopped before its end")


@asynccontextmanager
async def client(url: str, connections: int) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        yield http


# the phases


async def steady(url: str, clients: int, seconds: float, tokens: int) -> list[Answer]:
    """``clients`` clients send requests back to back for ``seconds``; every answer."""
    answers: list[Answer] = []
    numbers = itertools.count()
    deadline = time.monotonic() + seconds
    async with client(url, clients) as http:

        async def one() -> None:
            while time.monotonic() < deadline:
                number = next(numbers)
                answer = await send(http, KINDS[number % len(KINDS)], number, tokens)
                answers.append(answer)
                if answer.outcome is Outcome.BUSY:
                    await asyncio.sleep(answer.retry_after_s)

        await asyncio.gather(*(one() for _ in range(clients)))
    return answers


@dataclass
class Saturation:
    clients: int
    answered_at_once: int  # answered on the first try
    busy_at_once: int  # 503 with Retry-After on the first try
    slowest_busy_s: float  # the longest a 503 took to come back
    answered: int  # in the end, after waiting as Retry-After said
    retries: int
    max_retries: int
    lost: int  # no answer (including still refused at the deadline)
    errors: int  # 5xx other than 503 with Retry-After
    details: list[str] = field(default_factory=list)


async def saturate(url: str, clients: int, tokens: int) -> Saturation:
    """``clients`` requests at once; each refused one retries after Retry-After seconds."""
    deadline = time.monotonic() + SATURATION_DEADLINE_S
    async with client(url, clients) as http:

        async def one(number: int) -> list[Answer]:
            kind = KINDS[number % len(KINDS)]
            tries = [await send(http, kind, number, tokens)]
            while tries[-1].outcome is Outcome.BUSY and time.monotonic() < deadline:
                await asyncio.sleep(tries[-1].retry_after_s)
                tries.append(await send(http, kind, number, tokens))
            return tries

        everyone = await asyncio.gather(*(one(number) for number in range(clients)))
    firsts = [tries[0] for tries in everyone]
    busy = [a.seconds for a in firsts if a.outcome is Outcome.BUSY]
    finals = [tries[-1].outcome for tries in everyone]
    every = [a for tries in everyone for a in tries]
    return Saturation(
        clients=clients,
        answered_at_once=sum(a.outcome is Outcome.OK for a in firsts),
        busy_at_once=len(busy),
        slowest_busy_s=round(max(busy, default=0.0), 2),
        answered=finals.count(Outcome.OK),
        retries=sum(len(tries) - 1 for tries in everyone),
        max_retries=max(len(tries) - 1 for tries in everyone),
        lost=finals.count(Outcome.LOST) + finals.count(Outcome.BUSY),
        errors=sum(a.outcome is Outcome.ERROR for a in every),
        details=sorted({a.detail for a in every if a.outcome in (Outcome.LOST, Outcome.ERROR)})[:5],
    )


# the whole soak


@dataclass
class Options:
    duration_s: float = 60.0
    clients: int = 12
    tokens: int = 24
    warmup_s: float = 10.0
    max_queue: int = 4
    saturation_tokens: int = 64


@dataclass
class Report:
    fleet: dict[str, tuple[float, int]]
    options: Options
    capacity: int  # requests the fleet holds at once: slots plus queues
    sent: int
    completed: int
    lost: int
    errors: int  # 5xx other than 503 with Retry-After
    busy: int  # 503 with Retry-After
    refused: int  # 4xx
    p50_s: float
    p95_s: float
    p99_s: float
    per_s: float
    warm: Sample  # idle after the warm-up
    loaded: Sample  # the last sample under load
    after: Sample  # idle after the load
    drained: Sample  # idle after the saturation
    settle_s: float  # how long the gateway took to become idle after the load
    rss_slope_mib_min: float
    saturation: Saturation
    details: list[str]
    samples: list[Sample]  # one a second under the steady load

    @property
    def failed(self) -> bool:
        sat = self.saturation
        return bool(self.lost or self.errors or sat.lost or sat.errors)


def start(fleet: Fleet, max_queue: int) -> Gateway:
    """The gateway and its simulated neurons, registered."""
    gateway = fleet.gateway(env={"GANGLION_MAX_QUEUE": str(max_queue)})
    for name, (tps, slots) in FLEET.items():
        sim = fleet.sim(tps, model=MODEL, name=name, extra=["--slots", str(slots)])
        gateway.add(sim.url, name, slots=slots)
    return gateway


async def soak_gateway(gateway: Gateway, pid: int, options: Options) -> Report:
    """The four phases against a running gateway whose process is ``pid``."""
    url, port = gateway.url, gateway.process.port
    capacity = sum(slots + options.max_queue for _, slots in FLEET.values())
    await steady(url, options.clients, options.warmup_s, options.tokens)
    warm, _ = await idle(pid, port, len(FLEET))
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(pid, port, stop))
    started = time.perf_counter()
    answers = await steady(url, options.clients, options.duration_s, options.tokens)
    took = time.perf_counter() - started
    stop.set()
    samples = await watcher
    after, settle_s = await idle(pid, port, len(FLEET))
    saturation = await saturate(url, 3 * capacity, options.saturation_tokens)
    drained, _ = await idle(pid, port, len(FLEET))
    ok = [a.seconds for a in answers if a.outcome is Outcome.OK]
    count = {kind: sum(a.outcome is kind for a in answers) for kind in Outcome}
    return Report(
        fleet=FLEET,
        options=options,
        capacity=capacity,
        sent=len(answers),
        completed=count[Outcome.OK],
        lost=count[Outcome.LOST],
        errors=count[Outcome.ERROR],
        busy=count[Outcome.BUSY],
        refused=count[Outcome.REFUSED],
        p50_s=round(percentile(ok, 0.5), 3),
        p95_s=round(percentile(ok, 0.95), 3),
        p99_s=round(percentile(ok, 0.99), 3),
        per_s=round(len(answers) / took, 1),
        warm=warm,
        loaded=samples[-1],
        after=after,
        drained=drained,
        settle_s=settle_s,
        rss_slope_mib_min=slope_mib_per_min(samples),
        saturation=saturation,
        details=sorted({a.detail for a in answers if a.outcome is not Outcome.OK})[:5],
        samples=samples,
    )


def soak(fleet: Fleet, options: Options) -> Report:
    """Start a gateway and its neurons in ``fleet`` and soak it."""
    gateway = start(fleet, options.max_queue)
    assert gateway.process.popen is not None
    return asyncio.run(soak_gateway(gateway, gateway.process.popen.pid, options))


def text(report: Report) -> str:
    o, sat = report.options, report.saturation
    warm, loaded, after, drained = report.warm, report.loaded, report.after, report.drained
    fleet = ", ".join(f"{name} {tps:g} tok/s x{slots}" for name, (tps, slots) in FLEET.items())
    lines = [
        f"fleet {fleet}; max queue {o.max_queue} per neuron: holds {report.capacity} at once",
        f"steady: {o.clients} clients for {o.duration_s:g} s, {o.tokens} tokens each, "
        f"mixed {', '.join(KINDS)} (after {o.warmup_s:g} s warm-up)",
        f"  sent {report.sent}  completed {report.completed}  lost {report.lost}  "
        f"5xx {report.errors}  503+Retry-After {report.busy}  4xx {report.refused}  "
        f"({report.per_s} requests/s)",
        f"  latency p50 {report.p50_s:.3f} s  p95 {report.p95_s:.3f} s  p99 {report.p99_s:.3f} s",
        f"gateway RSS {warm.rss_mib} MiB warm -> {loaded.rss_mib} MiB at the end of the load "
        f"-> {after.rss_mib} MiB idle after (slope {report.rss_slope_mib_min:+.2f} MiB/min)",
        f"gateway RSS each minute of the load: {rss_by_minute(report.samples)} MiB",
        f"gateway fds {warm.fds} ({warm.sockets} sockets) warm -> {loaded.fds} at the end of "
        f"the load -> {after.fds} ({after.sockets} sockets) idle after (idle again in "
        f"{report.settle_s} s) -> {drained.fds} ({drained.sockets} sockets) after saturation",
        f"gateway connections idle after: {after.inbound} from clients, {after.outbound} to "
        f"neurons, {after.close_wait} half-closed (warm: {warm.inbound}, {warm.outbound}, "
        f"{warm.close_wait}; after saturation: {drained.inbound}, {drained.outbound}, "
        f"{drained.close_wait})",
        f"saturation: {sat.clients} clients at once ({o.saturation_tokens} tokens each): "
        f"{sat.answered_at_once} answered, {sat.busy_at_once} told 503+Retry-After "
        f"(slowest 503 in {sat.slowest_busy_s:.2f} s)",
        f"  after waiting as told: {sat.answered}/{sat.clients} answered, {sat.retries} "
        f"retries (at most {sat.max_retries} for one client), lost {sat.lost}, "
        f"5xx {sat.errors}",
    ]
    lines += [f"  problem: {detail}" for detail in report.details + sat.details]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=60.0, help="steady seconds (60)")
    parser.add_argument("--clients", type=int, default=12, help="steady clients (12)")
    parser.add_argument("--tokens", type=int, default=24, help="output tokens each (24)")
    parser.add_argument("--warmup", type=float, default=10.0, help="warm-up seconds (10)")
    parser.add_argument("--max-queue", type=int, default=4, help="GANGLION_MAX_QUEUE (4)")
    parser.add_argument("--logs", type=Path, help="keep process logs and databases here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    runs = parser.add_argument_group("orchestrated runs, instead of the phases above")
    runs.add_argument("--runs", type=int, default=0, help="this many runs, after the warm-up")
    runs.add_argument("--runs-warmup", type=int, default=200, help="warm-up runs (200)")
    runs.add_argument("--answer-tokens", type=int, default=64, help="each answer (64)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.runs:
        if not args.json:
            print(f"soaking a gateway with {args.runs_warmup + args.runs} runs", file=sys.stderr)
        return soak_runs.main(args)
    options = Options(args.duration, args.clients, args.tokens, args.warmup, args.max_queue)
    started = time.perf_counter()
    if not args.json:
        print(f"soaking a gateway for {args.warmup + args.duration:g} s", file=sys.stderr)
    with Fleet(args.logs) as fleet:
        report = soak(fleet, options)
    wall = round(time.perf_counter() - started, 1)
    if args.json:
        document = {
            **heading("soak"),
            "wall_s": wall,
            **asdict(report),
        }
        print(json.dumps(document, indent=2))
    else:
        print(text(report))
        print(f"({machine_note()}; whole benchmark {wall} s)")
    return 1 if report.failed else 0


if __name__ == "__main__":
    run_main(main)
