"""A GPU present but contributing nothing, through real processes: a simulated Ollama whose
``/api/ps`` says ``size_vram: 0``, a gateway, and ``ganglion doctor --send`` from a node whose
Quadro M4000 runs nouveau. The neuron's status, ``ganglion neuron list`` and the Prometheus
gauges all say the model is on the CPU, and point to ``ganglion doctor`` on that node."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Proc, Spawner, run_cli
from tests.doctor.conftest import FakeHost
from tests.fleet.test_liveness_e2e import ganglion, neuron, wait_status

ON_CPU = "model on CPU: 0 of 1.0 GB in VRAM (sim-model:latest); run `ganglion doctor` on gpu-box"


def wait_view(
    gateway: Proc, name: str, done: Callable[[dict[str, Any]], bool], within: float
) -> dict[str, Any]:
    """The neuron's view once ``done(view)``, or the last one seen after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not done(view := neuron(gateway, name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return view


def nouveau_box(root: Path) -> FakeHost:
    host = FakeHost(root)
    host.gpu(driver="nouveau")
    host.module("nouveau")
    return host


def test_a_sim_with_nothing_in_vram_on_a_nouveau_node(
    spawn: Spawner, db_url: str, tmp_path: Path
) -> None:
    gateway = spawn.gateway(db_url, probe_interval=0.5)
    sim = spawn.sim(40, extra=("--vram", "0"))
    ganglion(gateway, "neuron", "add", sim.url, "--name", "gpu-ollama", "--node", "gpu-box")
    answer = httpx.post(
        f"{gateway.url}/api/generate",
        json={"model": "sim-model", "prompt": "hi", "stream": False, "options": {"num_predict": 4}},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    seen = wait_view(gateway, "gpu-ollama", lambda view: bool(view["memory"]), within=10)
    assert seen["status"] == "active"  # nothing says this node has a GPU yet
    assert seen["memory"] == {"sim-model:latest": {"size_bytes": 1_000_000_000, "vram_bytes": 0}}

    box = nouveau_box(tmp_path / "box")
    sent = run_cli(
        "doctor", *box.args, "--no-cuda-check", "--send", "--node", "gpu-box",
        "--gateway", gateway.url, "--json",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert f"sent to {gateway.url} as node gpu-box: Quadro M4000: nouveau drives it" in sent.stderr

    view = wait_status(gateway, "gpu-ollama", "degraded", within=10)
    assert (view["status"], view["reason"], view["idle_gpu"]) == ("degraded", ON_CPU, ON_CPU)

    listed = run_cli("neuron", "list", "--gateway", gateway.url, env={"COLUMNS": "250"})
    assert listed.returncode == 0, listed.stderr
    assert "degraded" in listed.stdout
    assert "model on CPU: 0 of 1.0 GB in VRAM (sim-model:latest)" in listed.stdout

    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'ganglion_neuron_idle_gpu{neuron="gpu-ollama"} 1.0' in metrics
    assert (
        'ganglion_neuron_model_vram_ratio{model="sim-model:latest",neuron="gpu-ollama"} 0.0'
        in metrics
    )
    (node,) = httpx.get(f"{gateway.url}/fleet/nodes", timeout=10).json()
    assert (node["node"], node["gpus"], node["cuda_ok"]) == ("gpu-box", ["Quadro M4000"], None)
