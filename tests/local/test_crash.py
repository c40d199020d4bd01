"""A local llama.cpp server that dies says so: how it died, the tail of its log, the fix.

The server here is ``crashing/``: it answers ``/v1/models`` and then dies with SIGSEGV on its
first generation, as a natively tuned build did on an AVX-512/AMX Xeon.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from ganglion.errors import LocalFleetError
from ganglion.local.llama import LlamaServer
from tests.conftest import Spawner, free_port, run_cli

CRASHING = Path(__file__).parent / "crashing"
CRASHING_ENV = {"PYTHONPATH": str(CRASHING)}
REBUILD = f"{sys.executable} -m ganglion local build --force"


@pytest.fixture
def crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m llama_cpp.server`` is the crashing stand-in, here and in children."""
    monkeypatch.syspath_prepend(str(CRASHING))
    monkeypatch.setenv("PYTHONPATH", str(CRASHING))


def assert_says_it_crashed(message: str) -> None:
    assert "exited on its first generation (the warm-up): signal SIGSEGV (11)" in message
    assert REBUILD in message
    assert "AMX model buffer size" in message  # the tail of the server's own log


@pytest.mark.usefixtures("crashing")
def test_start_raises_when_the_server_dies_on_its_first_generation(tmp_path: Path) -> None:
    server = LlamaServer(tmp_path / "m.gguf", log_dir=tmp_path, startup_timeout_s=30)
    with pytest.raises(LocalFleetError) as caught:
        server.start()
    assert_says_it_crashed(str(caught.value))
    assert str(server.log_path) in str(caught.value)
    assert not server.running


def test_local_up_prints_the_crash_and_exits_non_zero(spawn: Spawner, tmp_path: Path) -> None:
    gateway = spawn.gateway(f"sqlite:///{tmp_path}/g.db")
    result = run_cli("local", "up", "--neurons", "1", "--gateway", gateway.url, env=CRASHING_ENV)
    assert result.returncode == 1
    assert "\nerror: the llama.cpp server exited" in result.stderr
    assert_says_it_crashed(result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert httpx.get(f"{gateway.url}/fleet/neurons").json() == []  # nothing half-registered


def test_demo_prints_the_crash_stops_everything_and_exits_non_zero(tmp_path: Path) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path}/d.db"
    result = run_cli("demo", "--once", "--port", str(port), "--db", db, env=CRASHING_ENV)
    assert result.returncode == 1
    assert_says_it_crashed(result.stderr)
    assert "demo stopped" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/fleet/neurons", timeout=1.0)
