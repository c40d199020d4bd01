"""``ganglion serve --config FILE``: every mistake in the file is refused at start with the
file and the line, exit 2, no traceback; a valid file configures the gateway and registers
its neurons; flags and the environment override it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Proc, Spawner, free_port, run_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ganglion.toml"
    path.write_text(text)
    return path


def refused(path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = run_cli("serve", "--config", str(path), *args, env=env, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    message = result.stderr.strip()
    assert message.startswith("error: "), message
    return message.removeprefix("error: ")


MISTAKES = [
    pytest.param(
        "port = 11435\nhost = \n", "ganglion.toml:2: not valid TOML: Invalid value", id="syntax"
    ),
    pytest.param(
        "# the gateway\nprot = 12000\n",
        "ganglion.toml:2: unknown setting 'prot': did you mean 'port'?",
        id="unknown-key",
    ),
    pytest.param(
        "port = 12000\nprobe_interval_s = 'often'\n",
        "ganglion.toml:2: probe_interval_s should be a valid number",
        id="wrong-type",
    ),
    pytest.param(
        "\n\nport = 70000\n",
        "ganglion.toml:3: port should be less than or equal to 65535 (got 70000)",
        id="bad-value",
    ),
    pytest.param(
        "routing_policy = 'fastest-please'\n",
        "ganglion.toml:1: unknown routing policy 'fastest-please': choose one of cache-aware",
        id="bad-choice",
    ),
    pytest.param(
        "port = 12000\n\n[[neuron]]\nname = 'gpu'\nurl = 'gpu-box:11434'\n",
        "ganglion.toml:5: 'gpu-box:11434' is not a neuron URL: give http://HOST:PORT",
        id="bad-neuron-url",
    ),
    pytest.param(
        "[[neuron]]\nurl = 'http://a:11434'\n\n[[neuron]]\nname = 'b'\ndialect = 'ollama'\n",
        "ganglion.toml:6: unknown neuron key 'dialect': did you mean 'api'?",
        id="unknown-neuron-key",
    ),
    pytest.param(
        "[[neuron]]\nurl = 'http://a:11434'\nslots = 0\n",
        "ganglion.toml:3: neuron slots should be greater than or equal to 1 (got 0)",
        id="bad-neuron-value",
    ),
    pytest.param(
        "[[neuron]]\nurl = 'http://a:11434'\nname = 'gpu box'\n",
        "ganglion.toml:3: neuron name must be letters, digits, '.', '_' and '-', starting",
        id="bad-neuron-name",
    ),
    pytest.param(
        "[[neuron]]\nname = 'a'\n",
        "ganglion.toml:1: this [[neuron]] has no url",
        id="neuron-without-url",
    ),
    pytest.param(
        "[[neuron]]\nurl = 'http://a:1'\n[[neuron]]\nurl = 'http://a:1/'\n",
        "ganglion.toml:4: url 'http://a:1' is already an earlier [[neuron]]'s",
        id="twin-neurons",
    ),
]


@pytest.mark.parametrize(("text", "expected"), MISTAKES)
def test_a_mistake_names_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert refused(path).startswith(f"{path.parent}/{expected}")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path / "nowhere.toml")
    assert message.startswith(f"{tmp_path}/nowhere.toml: cannot read the config file (No such")


def test_the_file_is_found_through_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 0\n")
    result = run_cli("serve", env={"GANGLION_CONFIG": str(path)}, timeout=60)
    assert result.returncode == 2
    assert "ganglion.toml:1: port should be greater than or equal to 1 (got 0)" in result.stderr


def test_flags_and_the_environment_win_over_the_file(spawn: Spawner, tmp_path: Path) -> None:
    file_port = free_port()
    path = write(
        tmp_path,
        f"port = {file_port}\nmax_body_bytes = 2048\n"
        f"database_url = 'sqlite:///{tmp_path / 'wins.db'}'\n",
    )
    gateway = spawn.ganglion(  # --port beats the file's port; the variable its body limit
        "serve",
        "--config",
        str(path),
        "--port",
        "{port}",
        ready_path="/fleet/neurons",
        env={"GANGLION_MAX_BODY_BYTES": "8192"},
    )
    assert gateway.port != file_port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{file_port}/fleet/neurons")
    assert httpx.post(f"{gateway.url}/api/chat", content=b" " * 4096).status_code == 400
    over = httpx.post(f"{gateway.url}/api/chat", content=b" " * 8193)
    assert over.status_code == 413
    assert "8 KiB (8192 bytes)" in over.json()["error"]


def test_a_valid_file_configures_the_gateway_and_registers_its_neurons(
    spawn: Spawner, tmp_path: Path
) -> None:
    sim = spawn.sim(200, model="llama3")
    port = free_port()
    path = write(
        tmp_path,
        f"""# a small fleet
port = {port}
database_url = "sqlite:///{tmp_path / "config.db"}"
probe_interval_s = 0.5
max_body_bytes = 2048

[[neuron]]
name = "box"
url = "{sim.url}"
api = "ollama"
node = "rack-1"
slots = 2
""",
    )
    gateway = spawn.ganglion("serve", "--config", str(path), port=port, ready_path="/fleet/neurons")
    neurons = wait_for_neurons(gateway)
    assert [(n["name"], n["url"], n["node"], n["slots"]) for n in neurons] == [
        ("box", sim.url, "rack-1", 2)
    ]
    assert neurons[0]["status"] == "active"
    big = httpx.post(f"{gateway.url}/api/chat", content=b" " * 4096)
    assert big.status_code == 413  # max_body_bytes from the file
    answer = httpx.post(
        f"{gateway.url}/api/generate",
        json={"model": "llama3", "prompt": "hi", "stream": False},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-ganglion-neuron"] == "box"
    gateway.stop()  # a restart finds the neuron in the store and keeps it, once
    again = spawn.ganglion("serve", "--config", str(path), port=port, ready_path="/fleet/neurons")
    assert [n["name"] for n in wait_for_neurons(again)] == ["box"]


def test_a_neuron_that_is_down_at_start_joins_when_it_answers(
    spawn: Spawner, tmp_path: Path
) -> None:
    sim_port, port = free_port(), free_port()
    path = write(
        tmp_path,
        f"""port = {port}
database_url = "sqlite:///{tmp_path / "late.db"}"
discover_retry_s = 0.5

[[neuron]]
name = "late"
url = "http://127.0.0.1:{sim_port}"
""",
    )
    gateway = spawn.ganglion("serve", "--config", str(path), port=port, ready_path="/fleet/neurons")
    assert httpx.get(f"{gateway.url}/fleet/neurons").json() == []
    spawn.sim(200, model="llama3", port=sim_port)
    assert [n["name"] for n in wait_for_neurons(gateway)] == ["late"]
    log = gateway.log.read_text()
    assert log.count("neuron late: not registered yet") == 1, log  # said once, not per retry


def test_the_file_manages_the_neurons_it_lists(spawn: Spawner, tmp_path: Path) -> None:
    """A neuron taken out of the file is unregistered at the next start with a file; one
    registered by hand stays until the file lists it; without a file, nothing is dropped."""
    sims = {name: spawn.sim(500, model="llama3") for name in "abc"}
    database = f"sqlite:///{tmp_path / 'managed.db'}"
    port = free_port()

    def start(*listed: str) -> Proc:
        tables = "".join(f"[[neuron]]\nname = '{n}'\nurl = '{sims[n].url}'\n" for n in listed)
        path = write(tmp_path, f"port = {port}\ndatabase_url = '{database}'\n{tables}")
        return spawn.ganglion(
            "serve", "--config", str(path), port=port, ready_path="/fleet/neurons"
        )

    def names(gateway: Proc) -> list[str]:
        return sorted(n["name"] for n in httpx.get(f"{gateway.url}/fleet/neurons").json())

    gateway = start("a", "b")
    assert names(gateway) == ["a", "b"]
    by_hand = {"url": sims["c"].url, "name": "c"}
    assert httpx.post(f"{gateway.url}/fleet/neurons", json=by_hand).status_code == 201
    gateway.stop()

    gateway = start("a")
    assert names(gateway) == ["a", "c"]  # b left the file; c was never the file's
    assert "config file: neuron b is no longer listed: unregistered" in gateway.log.read_text()
    gateway.stop()

    gateway = spawn.ganglion(  # no file: the neurons an earlier file registered stay
        "serve", "--port", "{port}", env={"GANGLION_DATABASE_URL": database}, ready_path="/"
    )
    assert names(gateway) == ["a", "c"]
    gateway.stop()

    gateway = start("c")  # the file takes over c, registered by hand
    assert names(gateway) == ["c"]
    gateway.stop()
    assert names(start()) == []


def wait_for_neurons(gateway: Proc, within: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        neurons: list[dict[str, object]] = httpx.get(f"{gateway.url}/fleet/neurons").json()
        if neurons:
            return neurons
        time.sleep(0.2)
    raise AssertionError(f"no neuron registered within {within} s:\n{gateway.log.read_text()}")
