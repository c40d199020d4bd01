"""Every user mistake: one line that says what to do, a non-zero exit, no traceback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Proc, Spawner, free_port, run_cli


def assert_one_line_error(result, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stderr.strip()
    assert message.startswith("error:"), message
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in " ".join(message.split()), message


@pytest.fixture
def web_server() -> Iterator[str]:
    """A plain web server that is not an LLM server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway(spawn: Spawner, db_url: str) -> Proc:
    return spawn.gateway(db_url)


def test_unreachable_url(gateway: Proc) -> None:
    result = run_cli("neuron", "add", "http://127.0.0.1:9", "--gateway", gateway.url)
    assert_one_line_error(result, "127.0.0.1:9", "running")


def test_not_an_llm_server(gateway: Proc, web_server: str) -> None:
    result = run_cli("neuron", "add", web_server, "--gateway", gateway.url)
    assert_one_line_error(result, "--api")


def test_duplicate_name(gateway: Proc, spawn: Spawner) -> None:
    first, second = spawn.sim(50), spawn.sim(50)
    assert (
        run_cli("neuron", "add", first.url, "--name", "a", "--gateway", gateway.url).returncode == 0
    )
    result = run_cli("neuron", "add", second.url, "--name", "a", "--gateway", gateway.url)
    assert_one_line_error(result, "already registered", "--name")


@pytest.mark.parametrize("command", ["rm", "suspend", "resume"])
def test_unknown_neuron(gateway: Proc, command: str) -> None:
    result = run_cli("neuron", command, "ghost", "--gateway", gateway.url)
    assert_one_line_error(result, "no neuron named 'ghost'", "neuron list")


def test_malformed_db_url(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "1", "--db", "nonsense://??")
    assert_one_line_error(result, "database", "sqlite:///")


def test_unreachable_db() -> None:
    result = run_cli(
        "serve", "--port", str(free_port()), "--db", "postgresql://u:hunter2@127.0.0.1:1/x"
    )
    assert_one_line_error(result, "cannot open the database")
    assert "hunter2" not in result.stderr


def test_no_gateway_running() -> None:
    result = run_cli("neuron", "list", "--gateway", "http://127.0.0.1:9")
    assert_one_line_error(result, "cannot reach the gateway", "ganglion serve")


def test_public_bind_refused(tmp_path: Path) -> None:
    """No admin key in the store: refused before anything is bound."""
    db = f"sqlite:///{tmp_path / 'public.db'}"
    result = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--db", db)
    assert_one_line_error(result, "refusing to bind 0.0.0.0", "ganglion keys create --admin")


def test_port_in_use(gateway: Proc, tmp_path: Path) -> None:
    result = run_cli("serve", "--port", str(gateway.port), "--db", f"sqlite:///{tmp_path}/x.db")
    assert_one_line_error(result, "already running")
