"""The registry's probes against a fake neuron: a busy neuron is excused a slow probe, an
unreachable one is not, and whoever waits on a neuron hears at once when it goes offline."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ganglion.clock import aware
from ganglion.errors import FleetError, UnknownNeuron
from ganglion.fleet.registry import MODELS_EVERY, Registry, accepts_connections
from ganglion.fleet.status import NeuronStatus
from ganglion.neurons.base import Dialect, TokenStats
from ganglion.store import Store
from tests.fakes import FakeOllama
from tests.neurons.conftest import Upstream, served


def registry_on(tmp_path: Path, handler: Callable[..., Any], **settings: Any) -> Registry:
    """A registry on a fresh SQLite file whose neurons are answered by ``handler``."""
    store = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
    return Registry(store, transport=httpx.MockTransport(handler), **settings)


async def test_a_busy_neuron_is_excused_slow_probes_until_it_stops_accepting_connections(
    tmp_path: Path,
) -> None:
    fake = FakeOllama()
    now = {"answers": True, "connects": True}

    async def handle(request: httpx.Request) -> httpx.Response:
        if not now["answers"]:
            await asyncio.sleep(3600)  # like llama-cpp-python holding /v1/models while busy
        return fake.handle(request)

    async def reachable(url: str, timeout_s: float) -> bool:
        return now["connects"]

    registry = registry_on(
        tmp_path,
        handle,
        probe_timeout_s=0.05,
        reachable=reachable,
    )
    neuron = await registry.add("http://gpu:11434", name="gpu", api=Dialect.OLLAMA)
    async with registry.track(neuron):
        now["answers"] = False
        for _ in range(3):
            await registry.probe(neuron)
        assert neuron.status is NeuronStatus.ACTIVE  # busy is not dead
        lost = registry.lost(neuron)
        now["connects"] = False  # the link is cut: busy or not, nothing gets through
        await registry.probe(neuron)
        assert (neuron.status, lost.done()) == (NeuronStatus.ACTIVE, False)  # hysteresis
        await registry.probe(neuron)
        assert neuron.status is NeuronStatus.OFFLINE
        assert neuron.reason is not None
        assert "no answer within" in neuron.reason
        assert lost.result() == neuron.reason
    now.update(answers=True, connects=True)
    await registry.probe(neuron)
    assert (neuron.status, neuron.reason) == (NeuronStatus.ACTIVE, None)
    assert not registry.lost(neuron).done()
    await registry.aclose()


async def test_accepts_connections_tells_a_listening_port_from_a_closed_one() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert await accepts_connections(f"http://127.0.0.1:{port}", 2.0)
    assert not await accepts_connections(f"http://127.0.0.1:{port}", 2.0)


async def test_a_neuron_removed_while_it_is_resumed_is_an_unknown_neuron_not_a_crash(
    tmp_path: Path,
) -> None:
    fake = FakeOllama()
    gate = {"closed": False}
    probing, go_on = asyncio.Event(), asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        if gate["closed"]:  # resume's probe waits here until the neuron is removed
            probing.set()
            await go_on.wait()
        return fake.handle(request)

    registry = registry_on(tmp_path, handle)
    neuron = await registry.add("http://gpu:11434", name="gpu", api=Dialect.OLLAMA)
    await registry.suspend("gpu")
    gate["closed"] = True
    resuming = asyncio.create_task(registry.resume("gpu"))
    await asyncio.wait_for(probing.wait(), 10)  # resume is now probing the neuron
    await registry.remove("gpu")
    go_on.set()
    with pytest.raises(UnknownNeuron, match="no neuron named 'gpu'"):
        await resuming
    await registry.probe(neuron)  # a probe that was already under way: a failure, no crash
    assert neuron.health.last_failure == "http://gpu:11434 was removed from the fleet"
    await registry.aclose()


async def test_the_registry_refuses_a_name_a_header_cannot_carry(tmp_path: Path) -> None:
    """Callers in code (local fleet, discovery, the config file) meet the same rule as the
    API: a name goes into the X-Ganglion-Neuron header of every answer."""
    fake = FakeOllama()
    registry = registry_on(tmp_path, fake.handle)
    with pytest.raises(FleetError, match="neuron name 'gpü' must be letters, digits"):
        await registry.add("http://gpu:11434", name="gpü", api=Dialect.OLLAMA)
    assert registry.neurons() == []
    added = await registry.add("http://gpu:11434", name="gpu-0.lan_a", api=Dialect.OLLAMA)
    assert [n.name for n in registry.neurons()] == [added.name]
    await registry.aclose()


async def test_probes_ask_for_the_model_list_now_and_then_and_when_a_model_appears(
    tmp_path: Path,
) -> None:
    """Most probes are one request (/api/ps); all is asked on the first success in a row (the
    registration's own probe, for a neuron just added), the model list once in every
    MODELS_EVERY after it, and at once when a model is loaded that it lacks."""
    fake = FakeOllama(models=["llama3"], in_memory={"llama3": (10, 10)})
    registry = registry_on(tmp_path, fake.handle)
    neuron = await registry.add("http://gpu:11434", name="gpu", api=Dialect.OLLAMA)

    async def probe() -> list[str]:
        fake.log.clear()
        await registry.probe(neuron)
        return list(fake.log)

    asked = [await probe() for _ in range(2 * MODELS_EVERY)]
    assert ["/api/version", "/api/tags", "/api/ps"] not in asked  # registering asked all
    with_list = [n for n, paths in enumerate(asked) if paths == ["/api/ps", "/api/tags"]]
    assert len(with_list) == 2
    assert with_list[1] - with_list[0] == MODELS_EVERY
    assert asked.count(["/api/ps"]) == 2 * MODELS_EVERY - 2

    fake.models.append("qwen3")  # pulled, then loaded by someone else's request
    fake.in_memory["qwen3"] = (20, 20)
    assert await probe() == ["/api/ps", "/api/tags"]
    assert neuron.models == ["llama3", "qwen3"]
    assert neuron.loaded == ["llama3", "qwen3"]

    fake.up = False
    await probe()
    fake.up = True
    assert await probe() == ["/api/version", "/api/tags", "/api/ps"]  # back: asked again
    assert neuron.status is NeuronStatus.ACTIVE
    await registry.aclose()


async def test_a_fleet_registered_at_once_asks_its_model_lists_in_different_rounds(
    tmp_path: Path,
) -> None:
    """Not every list in one round of probes (which would cost that round twice the rest)."""
    fake = FakeOllama(models=["llama3"])
    registry = registry_on(tmp_path, fake.handle)
    neurons = [
        await registry.add(f"http://gpu{n}:11434", name=f"gpu{n}", api=Dialect.OLLAMA)
        for n in range(MODELS_EVERY)
    ]
    for _ in range(MODELS_EVERY):
        fake.log.clear()
        for neuron in neurons:
            await registry.probe(neuron)
        assert fake.log.count("/api/tags") == 1
    await registry.aclose()


class Ollama(Upstream):
    """A real server on loopback for the three paths a probe asks."""

    async def answer(self, path: str, send: Any) -> None:
        body = {"/api/version": b'{"version": "0.12.0"}'}.get(path, b'{"models": []}')
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def test_a_registered_neurons_probes_reuse_the_connection_its_registration_opened(
    tmp_path: Path,
) -> None:
    """A thousand neurons registered at once cost no second thousand handshakes at the
    prober's next round."""
    app = Ollama()
    async with served(app) as url:
        registry = Registry(Store.open(f"sqlite:///{tmp_path / 'r.db'}"))
        neuron = await registry.add(url, name="gpu", api=Dialect.OLLAMA)
        for _ in range(3):
            await registry.probe(neuron)
        await registry.aclose()
    assert len(app.ports) == 3 + 3  # three to register, then one a probe
    assert len(set(app.ports)) == 1


async def test_a_success_still_judges_speed_errors_and_suspension(tmp_path: Path) -> None:
    """A request's success on a neuron judged active skips the full verdict only while it
    still decodes at its usual speed: slower than half its baseline degrades it, at once."""
    registry = registry_on(tmp_path, FakeOllama().handle)
    neuron = await registry.add("http://gpu:11434", name="gpu", api=Dialect.OLLAMA)
    usual = TokenStats(prompt_tokens=8, output_tokens=100, decode_s=1.0)
    for _ in range(4):  # a baseline of 100 tok/s
        await registry.record_success(neuron, "llama3", usual)
    assert (neuron.status, neuron.reason) == (NeuronStatus.ACTIVE, None)
    slow = TokenStats(prompt_tokens=8, output_tokens=100, decode_s=10.0)
    for _ in range(4):
        await registry.record_success(neuron, "llama3", slow)
    assert neuron.status is NeuronStatus.DEGRADED
    assert "below 50% of its own baseline" in str(neuron.reason)
    for _ in range(8):
        await registry.record_success(neuron, "llama3", usual)
    assert (neuron.status, neuron.reason) == (NeuronStatus.ACTIVE, None)

    for _ in range(3):  # three failures degrade it; a success among them changes nothing
        await registry.record_failure(neuron, "refused with 500")
        await registry.record_success(neuron, "llama3", usual)
    assert neuron.status is NeuronStatus.DEGRADED
    assert "3 failed requests" in str(neuron.reason)

    other = await registry.add("http://cpu:11434", name="cpu", api=Dialect.OLLAMA)
    other.health.suspended = True  # as loaded from a store whose status write was lost
    await registry.record_success(other, "llama3", usual)
    assert other.status is NeuronStatus.SUSPENDED
    await registry.aclose()


async def test_a_success_writes_the_last_seen_time_behind_it(tmp_path: Path) -> None:
    registry = registry_on(tmp_path, FakeOllama().handle)
    neuron = await registry.add("http://gpu:11434", name="gpu", api=Dialect.OLLAMA)
    registered = neuron.last_seen
    assert registered is not None
    stats = TokenStats(prompt_tokens=8, output_tokens=100, decode_s=1.0)
    await registry.record_success(neuron, "llama3", stats)
    first = neuron.last_seen
    assert first is not None
    await registry.record_success(neuron, "llama3", stats)
    assert neuron.last_seen is not None
    assert registered <= first <= neuron.last_seen
    await registry.aclose()  # writes what waits, lazy or not
    (row,) = registry.store.neurons()
    assert aware(row.last_seen) == neuron.last_seen
    assert row.status == "active"
