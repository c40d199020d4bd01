"""``ganglion serve --workers 2``: two real gateway processes on one port, real sims. The
workers share each neuron's load, so a job that comes in while another is running goes to
the free neuron, whichever worker takes it; and the shared memory is gone after a stop."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama

from tests.conftest import Spawner, run_cli

SHM = Path("/dev/shm")


def boards() -> set[str]:
    return {path.name for path in SHM.glob("*.lock")}


def test_two_workers_share_the_neurons_load_and_clean_up(spawn: Spawner, db_url: str) -> None:
    before = boards()
    gateway = spawn.gateway(db_url, env={"GANGLION_WORKERS": "2"})
    assert len(boards() - before) == 1, "the parent made one load board"
    for name in ("a", "b"):
        sim = spawn.sim(20.0)  # one slot each; an answer of 40 tokens takes 2 s
        added = run_cli("neuron", "add", sim.url, "--name", name, "--gateway", gateway.url)
        assert added.returncode == 0, added.stderr
    time.sleep(1.5)  # the worker that did not register them takes them in (every 0.5 s)
    chat = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
    for name in ("a", "b"):  # both load the model: a cold neuron would rank by its load time
        warm = httpx.post(
            f"{gateway.url}/api/chat",
            json={**chat, "stream": False, "options": {"num_predict": 2}},
            headers={"X-Ganglion-Neuron": name},
            timeout=60,
        )
        assert warm.status_code == 200, warm.text
    time.sleep(1.5)  # each worker's probes see the model loaded on both
    for _ in range(3):
        # A first answer starts streaming; then a second request comes, on a connection of
        # its own (either worker may take it): it must go to the other, free, neuron.
        with httpx.stream(
            "POST",
            f"{gateway.url}/api/chat",
            json={**chat, "options": {"num_predict": 40}},
            timeout=60,
        ) as first:
            lines = first.iter_lines()
            next(lines)  # running
            second = httpx.post(
                f"{gateway.url}/api/chat",
                json={**chat, "stream": False, "options": {"num_predict": 4}},
                timeout=60,
            )
            assert second.status_code == 200, second.text
            names = {first.headers["x-ganglion-neuron"], second.headers["x-ganglion-neuron"]}
            assert names == {"a", "b"}
            assert '"done":true' in "".join(lines).replace(" ", "")

    # Both workers answer the official client, and every answer is whole.
    with ollama.Client(host=gateway.url) as client, ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: client.chat(
                    model="sim-model",
                    messages=[{"role": "user", "content": "hi"}],
                    options={"num_predict": 3},
                ),
                range(16),
            )
        )
    assert all(a.done and a.message.content for a in answers)

    gateway.stop()
    assert boards() - before == set(), "the load board is removed when the gateway stops"
    assert gateway.process is not None
    assert gateway.process.returncode == 0
