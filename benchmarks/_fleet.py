"""A fleet on loopback for the benchmarks: a real gateway and simulated neurons, each its own
process (``python -m ganglion serve`` / ``ganglion sim``), all stopped when the fleet closes.

    with Fleet() as fleet:                       # a temporary folder for logs and databases
        gateway = fleet.gateway(env={"GANGLION_ROUTING_POLICY": "finish-time"})
        for name, tps in {"gpu": 90, "cpu": 5.5}.items():
            gateway.add(fleet.sim(tps, model="m").url, name)
        gateway.bench()                           # measure each neuron's decode speed

Closing the fleet (leaving the ``with`` block, also on Ctrl-C or SIGTERM) stops every
process it started, gateway first.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """One ``ganglion`` child process serving HTTP on loopback."""

    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, ready_path: str) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                break
            try:
                if httpx.get(self.url + ready_path, timeout=1.0).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(self.argv[2:4])} did not start on {self.url}:\n{tail}")

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)


@dataclass
class Gateway:
    """A gateway process and the calls the benchmarks make to its fleet API."""

    process: Process

    @property
    def url(self) -> str:
        return self.process.url

    def add(self, url: str, name: str, *, slots: int = 1) -> None:
        """Register the neuron at ``url``, on a node of its own."""
        body = {"url": url, "name": name, "node": name, "slots": slots}
        response = httpx.post(f"{self.url}/fleet/neurons", json=body, timeout=30)
        response.raise_for_status()

    def bench(self, max_tokens: int = 16) -> dict[str, float]:
        """Measure every neuron (in parallel: each is on its own node); name -> tok/s."""
        response = httpx.post(
            f"{self.url}/fleet/bench", json={"max_tokens": max_tokens}, timeout=300
        )
        response.raise_for_status()
        return {r["neuron"]: r["tokens_per_second"] for r in response.json() if r["ok"]}

    def stop(self) -> None:
        self.process.stop()


class Fleet:
    """Every process of one benchmark, with the folder that holds their logs."""

    def __init__(self, logs: Path | None = None) -> None:
        """Logs and databases go to ``logs`` (kept), or to a temporary folder (removed)."""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if logs is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ganglion-bench-")
            logs = Path(self._tmp.name)
        logs.mkdir(parents=True, exist_ok=True)
        self.root = logs
        self.processes: list[Process] = []
        self._previous_sigterm: Any = None

    def _spawn(self, args: list[str], ready_path: str, env: dict[str, str]) -> Process:
        port = free_port()
        argv = [sys.executable, "-m", "ganglion", *args, "--port", str(port)]
        log = self.root / f"{len(self.processes):02d}-{args[0]}-{port}.log"
        process = Process(argv, port, log, env)
        self.processes.append(process)
        process.start(ready_path)
        return process

    def sim(
        self, tps: float, *, model: str, name: str = "sim", extra: list[str] | None = None
    ) -> Process:
        args = ["sim", "--model", model, "--tps", str(tps), "--name", name, *(extra or [])]
        return self._spawn(args, "/api/version", {})

    def gateway(self, *, env: dict[str, str] | None = None, probe_interval: float = 2.0) -> Gateway:
        db = self.root / f"gateway-{len(self.processes):02d}.db"
        args = ["serve", "--db", f"sqlite:///{db}", "--probe-interval", str(probe_interval)]
        return Gateway(self._spawn(args, "/fleet/neurons", env or {}))

    def close(self) -> None:
        """Stop every process, the most recent first (gateways before the sims they use)."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Fleet:
        # SIGTERM takes the same way out as Ctrl-C: through __exit__, which stops everything.
        self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            self.close()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)


def show(result: dict[str, Any], as_json: bool, table: Callable[[dict[str, Any]], None]) -> int:
    """Print a benchmark's ``result``: one JSON document with ``--json``, else its table."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        table(result)
    return 0


def run_main(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; on Ctrl-C say that every process is stopped."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process it started is stopped", file=sys.stderr)
        sys.exit(130)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def heading(benchmark: str) -> dict[str, str]:
    """The first fields of a benchmark's ``--json`` document: which, when, on what."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_note(),
    }


def machine_note() -> str:
    cores = os.cpu_count() or 0
    return f"{cores} CPU cores visible, Python {sys.version.split()[0]}, simulated neurons"
