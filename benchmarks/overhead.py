"""What the gateway costs per proxied request: CPU, added latency, added time to first token,
and throughput, side by side with the upstream answered directly, in one run.

    .venv/bin/python benchmarks/overhead.py [--seconds 5] [--repeats 3] [--workers 1,2] [--json]

The parts, each its own process:

- **the upstream**: ``benchmarks/_upstream.py``, a fake neuron on uvicorn with httptools and
  uvloop that answers both dialects at once (16 chunks a streamed answer);
- **the gateway**: ``ganglion serve`` on SQLite, with two upstreams registered, one as an
  Ollama neuron and one as an OpenAI one (256 slots each); each request is pinned to the
  neuron whose dialect it speaks (``X-Ganglion-Neuron``), so answers pass dialect to dialect;
- **the load**: ``wrk`` (Debian's ``wrk``), 32 connections for throughput and CPU, one for
  latency.

The gateway runs alone on CPU 1; the upstream and ``wrk`` share CPU 0 (this machine has
two). CPU per request is the ``utime + stime`` that ``/proc`` reports for the measured
process (and its children) over a ``wrk`` run, divided by the requests that run completed.
The cost of a streamed chunk is the difference between 64-chunk and 16-chunk answers, per
extra chunk. Time to first token is the median over 200 sequential streamed requests,
read with a plain socket client on CPU 0 (load, like ``wrk``: off the gateway's core);
"added" figures are the gateway's minus the direct ones.
``--workers`` runs the throughput case again with ``ganglion serve --workers N``, unpinned.
The row ``openai keyed`` is the OpenAI whole case through a second gateway that enforces API
keys (``--require-keys``, as on any public bind), each request carrying a user key; it is
reported beside the others, and issue 15's verdicts do not read it.

The verdicts follow issue 15's definitions: CPU per request and added p50 are those of whole
(non-streaming) requests, the worse of the two dialects; a stream's cost is its chunks'.
This machine is shared, and one figure can move by half between two passes a minute apart,
so the whole measurement is made ``--repeats`` times over the same processes, and each
figure (every row, every chunk cost) is the median of its passes; the verdicts are read off
the medians. Every pass's figures are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from _fleet import Process, free_port, heading, machine_note, run_main, show

from ganglion.gateway.auth import Role, create_key, import_key, new_key
from ganglion.store import Store

HERE = Path(__file__).resolve().parent
MODEL = "fast:1b"
TTFT_REQUESTS = 200
TARGETS = {
    "cpu_ms_per_request": 0.25,
    "cpu_us_per_chunk": 20.0,
    "added_p50_ms": 0.5,
    "added_ttft_ms": 0.5,
}
CPU_GATEWAY, CPU_REST = "1", "0"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    neuron: str
    stream: bool
    key: str | None = None  # sent as 'Authorization: Bearer'

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Ganglion-Neuron": self.neuron}
        return headers | ({"Authorization": f"Bearer {self.key}"} if self.key else {})

    @property
    def api(self) -> str:
        return self.neuron.removeprefix("up-")

    def body(self, chunks: int = 16) -> dict[str, Any]:
        messages = [{"role": "user", "content": "Say hello."}]
        if self.path == "/api/chat":
            return {
                "model": MODEL,
                "messages": messages,
                "stream": self.stream,
                "options": {"num_predict": chunks},
            }
        return {"model": MODEL, "messages": messages, "stream": self.stream, "max_tokens": chunks}


CASES = [
    Case("ollama whole", "/api/chat", "up-ollama", False),
    Case("ollama stream", "/api/chat", "up-ollama", True),
    Case("openai whole", "/v1/chat/completions", "up-openai", False),
    Case("openai stream", "/v1/chat/completions", "up-openai", True),
]


@dataclass(frozen=True)
class Load:
    rps: float
    requests: int
    p50_ms: float
    cpu_s: float

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / max(self.requests, 1)


# --- processes ------------------------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and every process under it, in seconds."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) * TICK_S
    wanted, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in wanted:
                wanted.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in wanted)


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


def start_upstream(root: Path, api: str) -> Process:
    port = free_port()
    argv = pinned(CPU_REST, [sys.executable, str(HERE / "_upstream.py"), "--port", str(port)])
    process = Process(argv, port, root / f"upstream-{api}.log")
    process.start("/api/version")
    return process


def start_gateway(
    root: Path, upstreams: dict[str, Process], workers: int | None, user_key: str | None = None
) -> Process:
    """A gateway with the upstreams registered. With ``user_key``, one that enforces API keys,
    that key stored as a user key (and an admin key, to register the neurons)."""
    port = free_port()
    db = f"sqlite:///{root / f'gateway-{port}.db'}"
    args = ["serve", "--db", db, "--port", str(port)]
    if workers is not None:  # each worker takes in the neurons at its next probe round
        args += ["--workers", str(workers), "--probe-interval", "1"]
    admin: dict[str, str] = {}
    if user_key is not None:
        store = Store.open(db)
        try:
            import_key(store, user_key, Role.USER)
            admin = {"Authorization": f"Bearer {create_key(store, Role.ADMIN)[0]}"}
        finally:
            store.close()
        args.append("--require-keys")
    cpu = CPU_GATEWAY if workers is None else None
    argv = pinned(cpu, [sys.executable, "-m", "ganglion", *args])
    process = Process(argv, port, root / f"gateway-{port}.log")
    process.start("/fleet/neurons")
    for api, upstream in upstreams.items():
        name = f"up-{api}"
        body = {"url": upstream.url, "name": name, "node": name, "api": api, "slots": 256}
        answer = httpx.post(f"{process.url}/fleet/neurons", json=body, headers=admin, timeout=30)
        answer.raise_for_status()
    if workers is not None:
        time.sleep(2.5)
    return process


# --- load -----------------------------------------------------------------------------------


def wrk(url: str, case: Case, connections: int, seconds: int, root: Path, chunks: int) -> str:
    script = root / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(case.body(chunks)))}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in case.headers.items()]
    script.write_text("\n".join(lines) + "\n")
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
    done = subprocess.run(
        pinned(CPU_REST, [*argv, url + case.path]), capture_output=True, text=True, check=True
    )
    if "Non-2xx" in done.stdout or "Socket errors" in done.stdout:
        raise SystemExit(f"{case.label} at {url}: errors under load:\n{done.stdout}")
    return done.stdout


def measure(
    process: Process, case: Case, connections: int, seconds: int, root: Path, chunks: int = 16
) -> Load:
    assert process.popen is not None
    before = tree_cpu_s(process.popen.pid)
    out = wrk(process.url, case, connections, seconds, root, chunks)
    cpu = tree_cpu_s(process.popen.pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    assert p50 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return Load(rps, requests, float(p50.group(1)) * scale, cpu)


def ttft_ms(url: str, case: Case, count: int) -> float:
    """Median time from sending a streamed request to its first body bytes, in ms. The
    client is load, like ``wrk``: it runs on the upstream's core, off the gateway's."""
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(CPU_REST)})
    try:
        return _ttft_ms(url, case, count)
    finally:
        os.sched_setaffinity(0, mask)


def _ttft_ms(url: str, case: Case, count: int) -> float:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(case.body()).encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in case.headers.items())
    request = (
        f"POST {case.path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    samples = []
    for _ in range(count):
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            sock.sendall(request)
            seen = b""
            while not seen.partition(b"\r\n\r\n")[2]:  # headers, then a first body byte
                got = sock.recv(65536)
                if not got:
                    raise SystemExit(f"{url}{case.path} closed before its first token")
                seen += got
            samples.append(time.perf_counter() - started)
            while sock.recv(65536):  # the rest of the answer, then the server closes
                pass
    return 1000 * statistics.median(samples)


# --- the run --------------------------------------------------------------------------------


def run(seconds: int, repeats: int, workers: list[int], logs: Path | None) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    tmp = tempfile.TemporaryDirectory(prefix="ganglion-overhead-") if logs is None else None
    root = Path(tmp.name) if tmp else logs
    assert root is not None
    root.mkdir(parents=True, exist_ok=True)
    processes: list[Process] = []
    try:
        upstreams = {api: start_upstream(root, api) for api in ("ollama", "openai")}
        processes += upstreams.values()
        gateway = start_gateway(root, upstreams, None)
        processes.append(gateway)
        keyed = replace(CASES[2], label="openai keyed", key=new_key()[1])
        passes = []
        for _ in range(repeats):
            rows = [one_case(case, upstreams[case.api], gateway, seconds, root) for case in CASES]
            # started for its row only: an idle gateway on the measured core still wakes
            keyed_gateway = start_gateway(root, upstreams, None, user_key=keyed.key)
            processes.append(keyed_gateway)
            rows.append(one_case(keyed, upstreams[keyed.api], keyed_gateway, seconds, root))
            keyed_gateway.stop()
            passes.append({"rows": rows, **chunk_cost(upstreams, gateway, seconds, root)})
        gateway.stop()
        scaling = []
        for count in workers:
            several = start_gateway(root, upstreams, count)
            processes.append(several)
            load = measure(several, CASES[2], 32, seconds, root)
            scaling.append({"workers": count, "rps": round(load.rps)})
            several.stop()
    finally:
        for process in reversed(processes):
            process.stop()
        if tmp:
            tmp.cleanup()
    return {
        **heading("overhead"),
        "seconds": seconds,
        **medians(passes),
        "passes": passes,
        "workers": scaling,
    }


def medians(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the passes: the rows case by case, and the chunk costs."""
    rows = []
    for at, first in enumerate(passes[0]["rows"]):
        row = dict(first)
        for key, value in first.items():
            if key != "case" and isinstance(value, int | float):
                row[key] = statistics.median(p["rows"][at][key] for p in passes)
        rows.append(row)
    chunk = {
        label: statistics.median(p["chunk_us"][label] for p in passes)
        for label in passes[0]["chunk_us"]
    }
    return {"rows": rows, "chunk_us": chunk}


def one_case(
    case: Case, upstream: Process, gateway: Process, seconds: int, root: Path
) -> dict[str, Any]:
    direct, through = (measure(p, case, 32, seconds, root) for p in (upstream, gateway))
    direct_1, through_1 = (measure(p, case, 1, seconds, root) for p in (upstream, gateway))
    row: dict[str, Any] = {
        "case": case.label,
        "direct_rps": round(direct.rps),
        "gateway_rps": round(through.rps),
        "direct_cpu_ms": round(direct.cpu_ms_per_request, 3),
        "gateway_cpu_ms": round(through.cpu_ms_per_request, 3),
        "added_p50_ms": round(through_1.p50_ms - direct_1.p50_ms, 3),
    }
    if case.stream:
        added = ttft_ms(gateway.url, case, TTFT_REQUESTS) - ttft_ms(
            upstream.url, case, TTFT_REQUESTS
        )
        row["added_ttft_ms"] = round(added, 3)
    return row


def chunk_cost(
    upstreams: dict[str, Process], gateway: Process, seconds: int, root: Path
) -> dict[str, Any]:
    """CPU per streamed chunk: (64-chunk answer - 16-chunk answer) / 48, per dialect."""
    costs: dict[str, Any] = {}
    for case in (CASES[1], CASES[3]):
        for label, process in (("direct", upstreams[case.api]), ("gateway", gateway)):
            short = measure(process, case, 32, seconds, root, chunks=16)
            long = measure(process, case, 32, seconds, root, chunks=64)
            per = (long.cpu_ms_per_request - short.cpu_ms_per_request) * 1000 / 48
            costs.setdefault("chunk_us", {})[f"{case.label} {label}"] = round(per, 1)
    return costs


def print_table(result: dict[str, Any]) -> None:
    for number, one in enumerate(result["passes"], start=1):
        print(f"pass {number} of {len(result['passes'])}:")
        print_rows(one)
    print(f"median of the {len(result['passes'])} passes:")
    print_rows(result)
    for entry in result["workers"]:
        print(f"openai whole, ganglion serve --workers {entry['workers']}: {entry['rps']} rps")
    print_verdicts(result)


def print_rows(result: dict[str, Any]) -> None:
    print(
        f"{'case':<14} {'direct rps':>10} {'gateway rps':>11} {'cpu/req direct':>14} "
        f"{'cpu/req gateway':>15} {'added p50':>9} {'added TTFT':>10}"
    )
    for row in result["rows"]:
        ttft = f"{row['added_ttft_ms']:8.2f}ms" if "added_ttft_ms" in row else f"{'-':>10}"
        print(
            f"{row['case']:<14} {row['direct_rps']:>10} {row['gateway_rps']:>11} "
            f"{row['direct_cpu_ms']:>12.3f}ms {row['gateway_cpu_ms']:>13.3f}ms "
            f"{row['added_p50_ms']:>7.2f}ms {ttft}"
        )
    for label, cost in result["chunk_us"].items():
        print(f"cpu per streamed chunk, {label}: {cost:.1f} us")


def print_verdicts(result: dict[str, Any]) -> None:
    whole = [row for row in result["rows"] if row["case"].endswith("whole")]
    gateway_cpu = max(row["gateway_cpu_ms"] for row in whole)
    chunk = max(v for k, v in result["chunk_us"].items() if k.endswith("gateway"))
    p50 = max(row["added_p50_ms"] for row in whole)
    ttft = max(row.get("added_ttft_ms", 0.0) for row in result["rows"])
    for name, value, target in (
        (
            "gateway CPU per whole request, worse dialect",
            gateway_cpu,
            TARGETS["cpu_ms_per_request"],
        ),
        ("gateway CPU per streamed chunk, us", chunk, TARGETS["cpu_us_per_chunk"]),
        ("added p50 of a whole request at 1 connection, ms", p50, TARGETS["added_p50_ms"]),
        ("added TTFT, ms", ttft, TARGETS["added_ttft_ms"]),
    ):
        print(f"{name}: {value:.3f} (target <= {target}) {'met' if value <= target else 'MISSED'}")
    print(f"({machine_note()}; each wrk run {result['seconds']} s, gateway on CPU {CPU_GATEWAY})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="passes over every figure; each figure reported is the median of its passes",
    )
    parser.add_argument(
        "--workers", default="", help="comma-separated worker counts to measure, e.g. 1,2"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    args = parser.parse_args()
    workers = [int(n) for n in args.workers.split(",") if n]
    if args.repeats < 1:
        parser.error("--repeats must be 1 or more")
    result = run(args.seconds, args.repeats, workers, args.logs)
    return show(result, args.json, print_table)


if __name__ == "__main__":
    run_main(main)
