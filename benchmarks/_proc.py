"""The gateway process as ``/proc`` shows it: RSS, open fds and its TCP connections, one
:class:`Sample` at a time, every second while something runs, or once it is idle again."""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

IDLE_TIMEOUT_S = 60.0  # how long the gateway may take to drop its connections after load
ESTABLISHED, CLOSE_WAIT = "01", "08"  # states in /proc/net/tcp


@dataclass(frozen=True)
class Sample:
    at_s: float
    rss_mib: float
    fds: int
    sockets: int  # of those fds; the rest are files (the log, the store's database) and pipes
    inbound: int  # established connections from clients to the gateway's port
    outbound: int  # established connections the gateway opened (to its neurons)
    close_wait: int  # connections the other side closed and the gateway has not


def sample(pid: int, port: int, at_s: float = 0.0) -> Sample:
    """The process ``pid`` now: RSS, open fds, and its own TCP connections by state."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
    sockets = set()
    fds = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed while we looked
            continue
        fds += 1
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    counts = {"inbound": 0, "outbound": 0, "close_wait": 0}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in sockets:
                continue
            if state == CLOSE_WAIT:
                counts["close_wait"] += 1
            elif state == ESTABLISHED:
                own_port = int(local.rsplit(":", 1)[1], 16) == port
                counts["inbound" if own_port else "outbound"] += 1
    rss_mib = round(int(rss.group(1)) / 1024 if rss else 0.0, 1)
    return Sample(at_s, rss_mib, fds, len(sockets), **counts)


async def idle(pid: int, port: int, neurons: int) -> tuple[Sample, float]:
    """Wait (up to :data:`IDLE_TIMEOUT_S`) until the gateway is idle: no client connection,
    nothing half-closed, at most one connection per neuron (its prober's), and the same fd
    count three seconds running. That sample, and how long it took."""
    started = time.monotonic()
    last: list[Sample] = []
    while time.monotonic() - started < IDLE_TIMEOUT_S:
        now = sample(pid, port)
        quiet = now.inbound == 0 and now.close_wait == 0 and now.outbound <= neurons
        last = [*last[-2:], now] if quiet else []
        if len(last) == 3 and len({s.fds for s in last}) == 1:
            break
        await asyncio.sleep(1.0)
    return (last or [sample(pid, port)])[-1], round(time.monotonic() - started, 1)


async def watch(pid: int, port: int, stop: asyncio.Event) -> list[Sample]:
    """A sample every second until ``stop`` is set."""
    samples: list[Sample] = []
    started = time.monotonic()
    while not stop.is_set():
        samples.append(sample(pid, port, round(time.monotonic() - started, 1)))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return samples


def slope_mib_per_min(samples: list[Sample]) -> float:
    """RSS growth over ``samples``, least squares."""
    if len(samples) < 2 or samples[0].at_s == samples[-1].at_s:
        return 0.0
    fit = statistics.linear_regression([s.at_s for s in samples], [s.rss_mib for s in samples])
    return round(fit.slope * 60, 2)


def rss_by_minute(samples: list[Sample]) -> str:
    """The RSS at the start of each minute of ``samples``, and at their end."""
    minutes = range(int(samples[-1].at_s // 60) + 1)
    marks = [next(s for s in samples if s.at_s >= 60 * minute) for minute in minutes]
    return " ".join(f"{mark.rss_mib:g}" for mark in [*marks, samples[-1]])
