"""The multi-host fleet the fault tests break: a gateway, simulated neurons at very
different speeds and a real llama.cpp neuron, each on its own host (network namespace).

- ``net`` (per module): the test network, removed afterwards whatever happened.
- ``sims`` (per module): sim neurons ``n1`` (90 tok/s), ``n2`` (13) and ``n3`` (5.8), all
  serving the worker model and the brain model, answering every plan request with
  :data:`PLAN`. Before each test every one of them runs and every link is up.
- ``llama`` (per module): the real llama.cpp server with SmolLM2 on host ``llm``.
- ``gateway`` (per test): a fresh gateway (fresh SQLite store, an admin and a user API key)
  on host ``gw``, bound to that host's address, with short probe and idle timeouts. Its
  store is ``db_url``'s: a SQLite file, or in the PostgreSQL pass the test PostgreSQL,
  reached across the test network through a relay in the root namespace (the server
  listens on loopback only, which no test host can reach).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.engine import make_url

from ganglion.errors import LocalFleetError
from ganglion.local.llama import LOCAL_MODEL, LlamaServer, model_path
from tests.conftest import Proc, need, run_cli
from tests.faults.netns import Host, Network, NetworkError, clean_stale, missing
from tests.faults.relay import relay

WORKER = LOCAL_MODEL
"""The workers' model: served by the llama neuron, and by the sims under the same name."""
BRAIN = "brain"
SIM_PORT = 11434
GATEWAY_PORT = 11435
LLAMA_PORT = 8080
SPEEDS = {"n1": 90.0, "n2": 13.0, "n3": 5.8}
SUBTASKS = 6
SUBTASK_TOKENS = 16  # the plan's smallest subtask (orchestra.plan.MIN_EXPECTED_TOKENS)
PLAN = json.dumps(
    {
        "subtasks": [
            {"task": f"Describe planet {n}", "expected_tokens": SUBTASK_TOKENS}
            for n in range(SUBTASKS)
        ]
    }
)
GATEWAY_ENV = {
    "GANGLION_PROBE_TIMEOUT_S": "1",
    "GANGLION_IDLE_TIMEOUT_S": "2",
}
"""Short enough to see faults in seconds; probes every 0.5 s (``--probe-interval``)."""

T = TypeVar("T")


def eventually(check: Callable[[], T | None], within: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        time.sleep(0.1)


@dataclass
class Sim:
    """A ``ganglion sim`` process on its own host."""

    host: Host
    proc: Proc

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def running(self) -> bool:
        return self.proc.process is not None and self.proc.process.poll() is None

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.url}/sim/stats", timeout=5).json()
        return stats


def sim_argv(host: Host, tps: float, extra: tuple[str, ...]) -> list[str]:
    return [
        *(sys.executable, "-m", "ganglion", "sim", "--host", host.address, "--allow-public"),
        *("--port", str(SIM_PORT), "--tps", str(tps), "--name", host.name),
        *("--model", WORKER, "--model", BRAIN, "--structured-reply", PLAN, *extra),
    ]


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    reason = missing()
    need(reason is None, f"the fault tests build a network of namespaces: {reason}")
    network = Network()
    try:
        clean_stale()
        network.start()
        network.add_host("gw")
    except NetworkError as error:
        network.close()
        need(False, f"cannot build the test network here: {error}")
    yield network
    network.close()


def start_sims(
    net: Network, logs: Path, specs: dict[str, tuple[float, tuple[str, ...]]]
) -> dict[str, Sim]:
    """Start one sim per ``name: (tps, extra flags)``, each on a new host, all at once."""
    sims = {}
    for name, (tps, extra) in specs.items():
        host = net.add_host(name)
        argv = sim_argv(host, tps, extra)
        proc = net.process(host, argv, port=SIM_PORT, log=logs / f"{name}.log")
        sims[name] = Sim(host, proc)
        proc.launch()
    for sim in sims.values():
        sim.proc.wait(60)
    return sims


@pytest.fixture(scope="module")
def sims(net: Network, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sim]:
    logs = tmp_path_factory.mktemp("sims")
    return start_sims(net, logs, {name: (tps, ()) for name, tps in SPEEDS.items()})


@pytest.fixture(autouse=True)
def whole_again(request: pytest.FixtureRequest) -> None:
    """Before each test, every sim of the module runs and every link is up."""
    if "sims" not in request.fixturenames:
        return
    net: Network = request.getfixturevalue("net")
    fleet: dict[str, Sim] = request.getfixturevalue("sims")
    for sim in fleet.values():
        net.mend(sim.host)
        if not sim.running:
            sim.proc.start(60)


@pytest.fixture(scope="module")
def llama(net: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The real llama.cpp neuron on host ``llm`` (about 10-20 s to load on a busy machine)."""
    try:
        model = model_path()
    except LocalFleetError as error:
        need(False, str(error))
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    host = net.add_host("llm")
    server = LlamaServer(
        model,
        host=host.address,
        port=LLAMA_PORT,
        log_dir=tmp_path_factory.mktemp("llama"),
        launcher=net.launcher(host),
    )
    with server:
        yield server


@dataclass
class Gateway:
    """A gateway on host ``gw``, and an admin client for its fleet API."""

    proc: Proc
    admin_key: str
    user_key: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        auth = {"Authorization": f"Bearer {self.admin_key}"}
        self.client = httpx.Client(base_url=self.url, headers=auth, timeout=30)

    @property
    def url(self) -> str:
        return self.proc.url

    def add(self, name: str, url: str) -> dict[str, Any]:
        response = self.client.post("/fleet/neurons", json={"url": url, "name": name})
        assert response.status_code == 201, response.text
        view: dict[str, Any] = response.json()
        return view

    def neuron(self, name: str) -> dict[str, Any]:
        view: dict[str, Any] = self.client.get(f"/fleet/neurons/{name}").json()
        return view

    def wait_status(self, name: str, status: str, within: float = 60) -> dict[str, Any]:
        return eventually(
            lambda: (view := self.neuron(name))["status"] == status and view,
            within,
            f"{name} {status}",
        )

    def seconds_to(self, name: str, status: str, since: datetime) -> float | None:
        """From ``since`` to the neuron's first change to ``status`` after it, by the
        gateway's own record of status changes (``/fleet/neurons/NAME/history``)."""
        changes = self.client.get(f"/fleet/neurons/{name}/history").json()["changes"]
        times = [datetime.fromisoformat(c["at"]) for c in changes if c["status"] == status]
        later = [at for at in times if at >= since]
        return round((later[0] - since).total_seconds(), 2) if later else None

    def start_run(self, **body: Any) -> str:
        request = {
            "task": "Describe the planets",
            "model": WORKER,
            "brain": BRAIN,
            "policy": "round-robin",
            "max_subtasks": SUBTASKS,
            "decompose": "always",
            # round-robin puts work on every neuron, the faulty ones too: the rewrite path
            # schedules by policy (the stitched one sizes by speed; its faults are in
            # tests/orchestra/test_stitch_e2e.py)
            "synthesis": "rewrite",
        }
        response = self.client.post("/fleet/runs", json=request | body)
        assert response.status_code == 202, response.text
        run_id: str = response.json()["id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.client.get(f"/fleet/runs/{run_id}").json()
        return view

    def finished(self, run_id: str, within: float = 120) -> dict[str, Any]:
        return eventually(
            lambda: (view := self.run(run_id))["status"] != "running" and view,
            within,
            f"run {run_id} finished",
        )


@pytest.fixture
def store(net: Network, db_url: str) -> Iterator[str]:
    """``db_url`` as the gateway's host reaches it."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        yield db_url
        return
    root = f"{net.subnet}.1"
    with relay(root, (url.host or "127.0.0.1", url.port or 5432)) as port:
        yield url.set(host=root, port=port).render_as_string(hide_password=False)


@pytest.fixture
def gateway(net: Network, tmp_path: Path, store: str) -> Iterator[Gateway]:
    db = store
    keys = [run_cli("keys", "create", f"--{role}", "--db", db) for role in ("admin", "user")]
    for made in keys:
        assert made.returncode == 0, made.stderr
    host = net.hosts["gw"]
    argv = [sys.executable, "-m", "ganglion", "serve", "--host", host.address]
    argv += ["--port", str(GATEWAY_PORT), "--db", db, "--probe-interval", "0.5"]
    proc = net.process(
        host,
        argv,
        port=GATEWAY_PORT,
        log=tmp_path / "gateway.log",
        ready_path="/fleet/neurons",
        env=GATEWAY_ENV,
    )
    gateway = Gateway(proc.start(60), keys[0].stdout.strip(), keys[1].stdout.strip())
    yield gateway
    gateway.client.close()
    proc.stop()
