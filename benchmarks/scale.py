"""One gateway, many neurons: memory, probe cost, registration, offline detection and the
listing, at 100, 1,000 and 5,000 neurons, in one run.

    .venv/bin/python benchmarks/scale.py [--sizes 100,1000,5000] [--steady 60] [--json]

For each size: ``ganglion sim --count`` serves the neurons from two processes (nine in ten in
one, the rest in a "victim" process); a fresh ``ganglion serve`` on SQLite probes them every
``--probe-interval`` seconds (10 by default). The gateway is measured while it:

- **registers** them all with one ``POST /fleet/neurons`` of a list;
- **holds** them, once every neuron is active: its RSS, and the CPU it spends over
  ``--steady`` seconds (``/proc``), per probe and as a share of one core;
- **lists** them: the median of 20 ``GET /fleet/neurons`` from one client (kept-alive);
- **loses** the victim's neurons (the process is killed): the time until every one of them is
  offline, against the bound of two probe intervals plus the probe timeout.

Targets (issue 19, at 1,000 neurons): RSS at most 200 MB, CPU at most 5% of a core,
registration within 10 s, listing within 50 ms.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _fleet import Process, free_port, heading, machine_note, run_main, show

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PROBE_TIMEOUT_S = 3.0  # the gateway's default
KEEP_ALIVE_S = "3600"  # the sims keep idle connections as Ollama does (until closed)
TARGETS = {"rss_mb": 200.0, "cpu_share": 0.05, "register_s": 10.0, "list_ms": 50.0}


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def consecutive_ports(count: int) -> int:
    """A first port with ``count`` free ports after it (checked by binding each, as the sim
    binds: a port in TIME_WAIT from the run before is free), below the kernel's ephemeral
    range, which the gateway's own connections to the neurons draw from."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for first in range(low - count - 1, 1024, -max(count // 4, 64)):
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise SystemExit(f"found no {count} free consecutive ports")


def start_sims(root: Path, label: str, count: int) -> tuple[Process, list[str]]:
    first = consecutive_ports(count)
    argv = [sys.executable, "-m", "ganglion", "sim", "--count", str(count), "--port", str(first)]
    argv += ["--model", "m", "--tps", "50", "--name", label, "--keep-alive", KEEP_ALIVE_S]
    process = Process(argv, first, root / f"sims-{label}.log")
    process.start("/api/version")
    return process, [f"http://127.0.0.1:{port}" for port in range(first, first + count)]


def start_gateway(root: Path, interval: float) -> Process:
    port = free_port()
    db = root / f"gateway-{port}.db"
    argv = [sys.executable, "-m", "ganglion", "serve", "--db", f"sqlite:///{db}"]
    argv += ["--port", str(port), "--probe-interval", str(interval)]
    process = Process(argv, port, root / f"gateway-{port}.log")
    process.start("/fleet/neurons")
    return process


def count(url: str, status: str) -> int:
    answer = httpx.get(f"{url}/fleet/neurons", params={"status": status, "limit": 1}, timeout=60)
    return int(answer.headers["X-Total-Count"])


def wait_for(url: str, status: str, wanted: int, timeout_s: float) -> float:
    """Seconds until ``wanted`` neurons are ``status`` (or SystemExit after ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if count(url, status) >= wanted:
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"{wanted} neurons not {status} within {timeout_s:.0f} s")


def one_size(root: Path, size: int, interval: float, steady: float) -> dict[str, Any]:
    victims = max(1, size // 10)
    processes: list[Process] = []
    try:
        main, urls = start_sims(root, f"main{size}", size - victims)
        victim, victim_urls = start_sims(root, f"victim{size}", victims)
        processes += [main, victim]
        gateway = start_gateway(root, interval)
        processes.append(gateway)
        assert gateway.popen is not None
        assert victim.popen is not None
        pid = gateway.popen.pid
        baseline_mb = rss_mb(pid)
        body = [{"url": url, "api": "ollama"} for url in urls + victim_urls]
        started = time.monotonic()
        added = httpx.post(f"{gateway.url}/fleet/neurons", json=body, timeout=600)
        register_s = time.monotonic() - started
        if added.status_code != 201:
            raise SystemExit(f"registering {size} neurons: {added.status_code} {added.text[:500]}")
        wait_for(gateway.url, "active", size, 120)
        time.sleep(interval)  # one full round of probes before measuring
        before, started = cpu_s(pid), time.monotonic()
        time.sleep(steady)
        cpu, wall = cpu_s(pid) - before, time.monotonic() - started
        rss = rss_mb(pid)
        listing = []
        with httpx.Client(timeout=60) as client:  # a new one costs ~35 ms here (CA bundle)
            for _ in range(20):
                began = time.perf_counter()
                client.get(f"{gateway.url}/fleet/neurons").raise_for_status()
                listing.append(time.perf_counter() - began)
        victim.popen.kill()
        lost_s = wait_for(gateway.url, "offline", victims, 10 * interval + 60)
        probes = size * wall / interval
        return {
            "neurons": size,
            "register_s": round(register_s, 2),
            "rss_mb": round(rss, 1),
            "rss_baseline_mb": round(baseline_mb, 1),
            "kib_per_neuron": round((rss - baseline_mb) * 1024 / size, 1),
            "cpu_share": round(cpu / wall, 4),
            "cpu_ms_per_probe": round(1000 * cpu / probes, 3),
            "list_ms": round(1000 * statistics.median(listing), 1),
            "offline_after_s": round(lost_s, 1),
            "offline_bound_s": 2 * interval + PROBE_TIMEOUT_S,
        }
    finally:
        for process in reversed(processes):
            process.stop()


def run(sizes: list[int], interval: float, steady: float, logs: Path | None) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="ganglion-scale-") if logs is None else None
    root = Path(tmp.name) if tmp else logs
    assert root is not None
    root.mkdir(parents=True, exist_ok=True)
    try:
        rows = [one_size(root, size, interval, steady) for size in sizes]
    finally:
        if tmp:
            tmp.cleanup()
    return {**heading("scale"), "probe_interval_s": interval, "steady_s": steady, "rows": rows}


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'neurons':>7} {'register':>9} {'RSS':>9} {'KiB/neuron':>10} {'CPU':>7} "
        f"{'ms/probe':>8} {'list':>8} {'offline after':>13}"
    )
    for row in result["rows"]:
        print(
            f"{row['neurons']:>7} {row['register_s']:>8.2f}s {row['rss_mb']:>7.1f}MB "
            f"{row['kib_per_neuron']:>10.1f} {100 * row['cpu_share']:>6.1f}% "
            f"{row['cpu_ms_per_probe']:>8.3f} {row['list_ms']:>6.1f}ms "
            f"{row['offline_after_s']:>6.1f}s (<= {row['offline_bound_s']:.0f}s)"
        )
    for row in result["rows"]:
        if row["neurons"] != 1000:
            continue
        for key, target in TARGETS.items():
            verdict = "met" if row[key] <= target else "MISSED"
            print(f"at 1,000 neurons, {key}: {row[key]} (target <= {target}) {verdict}")
    print(
        f"({machine_note()}; probes every {result['probe_interval_s']:g} s; "
        f"CPU over {result['steady_s']:g} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="neuron counts, comma-separated")
    parser.add_argument("--probe-interval", type=float, default=10.0)
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of CPU measurement")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",") if n]
    result = run(sizes, args.probe_interval, args.steady, args.logs)
    return show(result, args.json, print_table)


if __name__ == "__main__":
    run_main(main)
