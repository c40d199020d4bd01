"""``ganglion top`` in a pseudo-terminal: every neuron and its status, live; q quits."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pexpect
from rich.console import Console

from ganglion.cli.top import render
from tests.conftest import Proc, Spawner

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
LEAVE_ALTERNATE_SCREEN = "\x1b[?1049l"


def wait_for(child: pexpect.spawn, pattern: str, within: float) -> str:
    """Read the terminal until ``pattern`` matches the text without escape codes."""
    seen = ""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(pexpect.TIMEOUT):
            seen += child.read_nonblocking(65536, timeout=0.2)
        if re.search(pattern, ANSI.sub("", seen)):
            return ANSI.sub("", seen)
    raise AssertionError(
        f"{pattern!r} not shown within {within} s; last:\n{ANSI.sub('', seen)[-2000:]}"
    )


def start_top(gateway: Proc, tmp_path: Path) -> pexpect.spawn:
    args = ["-m", "ganglion", "top", "--gateway", gateway.url, "--interval", "0.3"]
    return pexpect.spawn(
        sys.executable,
        args,
        dimensions=(40, 160),
        encoding="utf-8",
        codec_errors="replace",
        env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=10,
    )


def test_top_shows_every_neuron_live_and_quits_with_q(
    spawn: Spawner, tmp_path: Path, db_url: str
) -> None:
    gateway = spawn.gateway(db_url, probe_interval=0.5)
    fast, slow = spawn.sim(90), spawn.sim(8)
    for sim, name, node in [(fast, "rtx-4090", "gpu-box"), (slow, "xeon-cpu", "cpu-box")]:
        body = {"url": sim.url, "name": name, "node": node}
        assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201
    httpx.post(f"{gateway.url}/fleet/neurons/xeon-cpu/suspend")

    child = start_top(gateway, tmp_path)
    try:
        wait_for(child, r"rtx-4090\s+active", within=10)
        wait_for(child, r"xeon-cpu\s+suspended", within=5)
        httpx.post(f"{gateway.url}/fleet/neurons/xeon-cpu/resume")
        slow.kill()
        wait_for(child, r"xeon-cpu\s+offline", within=8)  # live, without a restart
        child.send("q")
        child.expect(pexpect.EOF, timeout=5)
        assert LEAVE_ALTERNATE_SCREEN in child.before  # the terminal is given back
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_top_quits_cleanly_on_ctrl_c_even_without_a_gateway(tmp_path: Path) -> None:
    nowhere = Proc([], port=9, log=tmp_path / "none.log")  # nothing listens on port 9
    child = start_top(nowhere, tmp_path)
    try:
        wait_for(child, r"cannot reach the gateway", within=10)
        child.sendintr()
        child.expect(pexpect.EOF, timeout=5)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_the_frame_groups_by_node_and_explains_every_problem() -> None:
    views = [
        view("rtx-4090", "gpu-box", "active", 88.8),
        view("p40", "gpu-box", "degraded", 12.0, reason="decoding at 12.0 tok/s, below 50%"),
        view("xeon-cpu", "cpu-box", "offline", None, reason="2 probes failed in a row"),
    ]
    console = Console(width=120, record=True, color_system=None)
    console.print(render(views, gateway="http://gw:11435", now=datetime(2026, 1, 1, 12, 0, 0)))
    text = console.export_text()
    assert "3 neurons: 1 active, 1 degraded, 1 offline" in text
    assert "100.8 tok/s" in text
    assert re.search(r"xeon-cpu\s+offline\s+2 probes failed in a row", text)
    assert re.search(r"p40\s+degraded\s+decoding at 12.0", text)
    assert text.index("cpu-box") < text.index("gpu-box")  # nodes in order
    assert re.search(r"rtx-4090\s+active\s+━{16}\s+88.8\s+0/1", text)


def test_an_empty_fleet_says_how_to_add_a_neuron() -> None:
    console = Console(width=100, record=True, color_system=None)
    console.print(render([], gateway="http://gw:11435"))
    assert "ganglion neuron add URL" in console.export_text()


def view(name: str, node: str, status: str, tps: float | None, reason: str | None = None) -> dict:
    return {
        "name": name,
        "node": node,
        "status": status,
        "is_active": status in ("active", "degraded"),
        "reason": reason,
        "tokens_per_second": tps,
        "in_flight": 0,
        "slots": 1,
    }
