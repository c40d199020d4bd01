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

from ganglion.cli.runs_panel import CHART_WIDTH
from ganglion.cli.top import render
from ganglion.orchestra.view import RunView
from tests.conftest import Proc, Spawner
from tests.orchestra.test_stitch_e2e import finished, fleet, start

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


def test_top_draws_the_newest_stitched_run_from_a_real_gateway(
    spawn: Spawner, tmp_path: Path, db_url: str
) -> None:
    gateway, _ = fleet(spawn, db_url, {"w0": 40, "w1": 40}, brain_tps=40)
    run_id = start(gateway, decompose="always", answer_tokens=160)
    view = finished(gateway, run_id)
    assert (view["status"], view["synthesis"]) == ("completed", "stitch")
    assert view["timeline"]["opening"]["neuron"] in ("w0", "w1")
    assert view["timeline"]["closing"]["end_s"] is not None

    child = start_top(gateway, tmp_path)
    try:
        seen = wait_for(child, rf"run {run_id[:8]} · decomposed, stitch · completed", within=10)
        # The first wait may stop mid-frame: the rows are looked for in all that was drawn.
        seen += wait_for(child, r"1st token\s+ *▲", within=5)
        for row in (r"outline\s+brain-model\s+ *█", r"opening\s+w[01]\s+ *█", r"closing\s+"):
            assert re.search(row, seen), row
        assert re.search(r"#0\s+w[01]\s+ *█", seen)
        child.send("q")
        child.expect(pexpect.EOF, timeout=5)
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


# --- the runs panel: the recent runs and the newest one's timeline


def stitched_run() -> RunView:
    """Eight seconds: the outline (0-4 s) overlaps the opening, both parts and the closing."""
    return RunView.model_validate(
        {
            "id": "3f2a1b2c-0000",
            "status": "completed",
            "task": "Describe the planets",
            "brain": "llama3",
            "mode": "decomposed",
            "synthesis": "stitch",
            "timings": {"total_s": 8.0, "first_token_s": 0.8},
            "timeline": {
                "elapsed_s": 8.0,
                "first_token_s": 0.8,
                "decompose": {"start_s": 0.0, "end_s": 4.0},
                "parallel": {"start_s": 1.0, "end_s": 6.0},
                "synthesize": {"start_s": 6.0, "end_s": 8.0},
                "opening": {"start_s": 0.5, "end_s": 1.5, "neuron": "w1"},
                "closing": {"start_s": 4.0, "end_s": 5.0, "neuron": "brain-box"},
            },
            "delegations": [
                {
                    "index": 0,
                    "subtask": "a",
                    "neuron": "w0",
                    "status": "completed",
                    "start_s": 1.0,
                    "end_s": 5.0,
                },
                {
                    "index": 1,
                    "subtask": "b",
                    "neuron": "w1",
                    "status": "completed",
                    "start_s": 2.0,
                    "end_s": 6.0,
                },
            ],
        }
    )


def bar_on(text: str, label: str) -> tuple[int, int, str]:
    """Where the row ``label``'s bar starts on the time axis, how long it is, its neuron."""
    axis = next(line for line in text.splitlines() if line.startswith(" time"))
    origin = axis.index("0 s")
    row = next(line for line in text.splitlines() if line.startswith(f" {label} "))
    found = re.search(r"[█▒▲]+", row[origin:])
    assert found is not None, row
    return found.start(), len(found[0]), row[len(label) + 1 : origin].strip()


def test_the_runs_panel_draws_the_overlapping_bars_on_one_time_axis() -> None:
    run = stitched_run()
    listed = run.model_copy(update={"delegations": None})
    console = Console(width=140, record=True, color_system=None)
    console.print(render([], gateway="http://gw:11435", runs=[listed], latest=run))
    text = console.export_text()
    assert re.search(r"3f2a1b2c\s+completed\s+decomposed\s+8.00 s\s+0.80 s\s+Describe", text)
    assert "run 3f2a1b2c · decomposed, stitch · completed" in text
    per_s = CHART_WIDTH / 8.0  # the axis is the run's 8 seconds
    assert bar_on(text, "outline") == (0, round(4 * per_s), "llama3")
    assert bar_on(text, "opening") == (round(0.5 * per_s), round(1 * per_s), "w1")
    assert bar_on(text, "#0") == (round(1 * per_s), round(4 * per_s), "w0")
    assert bar_on(text, "#1") == (round(2 * per_s), round(4 * per_s), "w1")
    assert bar_on(text, "closing") == (round(4 * per_s), round(1 * per_s), "brain-box")
    assert bar_on(text, "1st token")[:2] == (int(0.8 * per_s), 1)
    rows = [line.split()[0] for line in text.splitlines()[-7:]]
    assert rows == ["time", "outline", "opening", "#0", "#1", "closing", "1st"]


def test_a_part_under_way_grows_to_now_and_a_queued_one_waits() -> None:
    run = stitched_run()
    line = run.timeline.model_copy(update={"elapsed_s": 4.0, "closing": None})
    parts = [
        run.delegations[0].model_copy(update={"status": "active", "end_s": None}),
        run.delegations[1].model_copy(update={"status": "pending", "start_s": None, "end_s": None}),
    ]
    live = run.model_copy(update={"status": "running", "timeline": line, "delegations": parts})
    live.timings.total_s = None
    console = Console(width=140, record=True, color_system=None)
    console.print(render([], gateway="http://gw:11435", runs=[live], latest=live))
    text = console.export_text()
    assert "4.00 s so far" in text
    per_s = CHART_WIDTH / 4.0
    assert bar_on(text, "#0")[:2] == (round(1 * per_s), round(3 * per_s))
    assert "▒" * round(3 * per_s) in text  # drawn as under way
    assert re.search(r"#1\s+w1\s+queued", text)
    assert "closing" not in text


def test_without_runs_there_is_no_runs_panel() -> None:
    console = Console(width=100, record=True, color_system=None)
    console.print(render([view("gpu", "rig", "active", 50.0)], gateway="http://gw:11435"))
    assert " runs" not in console.export_text()
