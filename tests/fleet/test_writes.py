"""Speed samples are written behind the requests: in batches, off the request path, bounded,
and all of them at a clean shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from ganglion.fleet.writes import WriteBehind
from ganglion.neurons.base import TokenStats
from ganglion.store import SpeedSample, Store
from ganglion.store.schema import NeuronRow
from tests.conftest import Spawner


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


def registered(store: Store, name: str) -> int:
    row = NeuronRow(
        name=name, url=f"http://127.0.0.1:1/{name}", api="ollama", node=name, models=["m"]
    )
    return store.add_neuron(row).id


def sample(neuron_id: int, tokens: int) -> SpeedSample:
    return SpeedSample(neuron_id, "m", "traffic", TokenStats(output_tokens=tokens, decode_s=1.0))


async def test_samples_wait_in_memory_and_are_written_in_one_batch(store: Store) -> None:
    gpu = registered(store, "gpu")
    writer = WriteBehind(store, flush_s=3600)  # only an explicit flush writes
    for tokens in range(5):
        writer.add(sample(gpu, tokens))
    assert writer.pending == 5
    assert store.samples(gpu) == []  # nothing waited for the store
    assert await writer.flush() == 5
    assert [s.output_tokens for s in store.samples(gpu)] == [0, 1, 2, 3, 4]
    assert writer.pending == 0
    await writer.aclose()


async def test_the_writer_flushes_on_its_own_every_interval(store: Store) -> None:
    gpu = registered(store, "gpu")
    writer = WriteBehind(store, flush_s=0.01)
    writer.add(sample(gpu, 7))
    for _ in range(500):
        if store.samples(gpu):
            break
        await asyncio.sleep(0.01)
    assert [s.output_tokens for s in store.samples(gpu)] == [7]
    await writer.aclose()


async def test_closing_writes_what_is_left(store: Store) -> None:
    gpu = registered(store, "gpu")
    writer = WriteBehind(store, flush_s=3600)
    writer.add(sample(gpu, 1))
    writer.add(sample(gpu, 2))
    await writer.aclose()
    assert [s.output_tokens for s in store.samples(gpu)] == [1, 2]


async def test_a_removed_neurons_samples_are_skipped_and_the_rest_kept(store: Store) -> None:
    gpu, cpu = registered(store, "gpu"), registered(store, "cpu")
    writer = WriteBehind(store, flush_s=3600)
    writer.add(sample(gpu, 1))
    writer.add(sample(cpu, 2))
    store.remove_neuron("gpu")
    assert await writer.flush() == 1
    assert [s.output_tokens for s in store.samples(cpu)] == [2]
    await writer.aclose()


async def test_a_full_buffer_drops_the_oldest_and_counts_them(store: Store) -> None:
    gpu = registered(store, "gpu")
    writer = WriteBehind(store, flush_s=3600, max_pending=3)
    for tokens in range(5):
        writer.add(sample(gpu, tokens))
    assert (writer.pending, writer.dropped) == (3, 2)
    await writer.aclose()
    assert [s.output_tokens for s in store.samples(gpu)] == [2, 3, 4]


def test_a_clean_shutdown_loses_no_sample(spawn: Spawner, store_url: str) -> None:
    """Through a real gateway and sim: every answered request's sample is in the store after
    the gateway is stopped with SIGTERM, however recently it was answered."""
    sim = spawn.sim(2000, model="m")
    gateway = spawn.gateway(store_url, probe_interval=30)
    httpx.post(f"{gateway.url}/fleet/neurons", json={"url": sim.url}, timeout=30).raise_for_status()
    answered = 12
    for _ in range(answered):
        body = {"model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": 4}}
        httpx.post(f"{gateway.url}/api/generate", json=body, timeout=30).raise_for_status()
    gateway.stop()
    store = Store.open(store_url)
    try:
        (row,) = store.neurons()
        traffic = [s for s in store.samples(row.id, limit=100) if s.source == "traffic"]
        assert len(traffic) == answered
    finally:
        store.close()


async def test_neuron_updates_are_kept_newest_first_and_written_together(store: Store) -> None:
    gpu, cpu = registered(store, "gpu"), registered(store, "cpu")
    writer = WriteBehind(store, flush_s=3600)
    writer.update_neuron(gpu, {"status": "offline", "reason": "no answer"})
    writer.update_neuron(gpu, {"status": "degraded", "reason": "decoding at 10 tok/s"})
    writer.update_neuron(cpu, {"status": "offline", "reason": "no answer"})
    assert {row.name: row.status for row in store.neurons()} == {"gpu": "active", "cpu": "active"}
    await writer.aclose()
    rows = {row.name: (row.status, row.reason) for row in store.neurons()}
    assert rows == {"gpu": ("degraded", "decoding at 10 tok/s"), "cpu": ("offline", "no answer")}


async def test_a_removed_neurons_pending_writes_never_reach_another_row(store: Store) -> None:
    """SQLite gives a removed neuron's id to the next one registered: what the registry
    forgets on removal must not land on the newcomer."""
    gpu = registered(store, "gpu")
    writer = WriteBehind(store, flush_s=3600)
    writer.update_neuron(gpu, {"status": "offline"})
    writer.add(sample(gpu, 9))
    store.remove_neuron("gpu")
    writer.forget(gpu)
    newcomer = registered(store, "gpu")
    await writer.aclose()
    (row,) = store.neurons()
    assert row.status == "active"
    assert store.samples(newcomer) == []


async def test_an_update_for_a_neuron_removed_elsewhere_changes_nothing(store: Store) -> None:
    gpu, cpu = registered(store, "gpu"), registered(store, "cpu")
    writer = WriteBehind(store, flush_s=3600)
    writer.update_neuron(gpu, {"status": "offline"})
    store.remove_neuron("gpu")  # by another replica: this writer was not told
    await writer.aclose()
    assert [(row.id, row.status) for row in store.neurons()] == [(cpu, "active")]


def aware(when: datetime | None) -> datetime | None:
    """A time read back from the store, in UTC (SQLite gives it back without a zone)."""
    return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)


async def test_lazy_updates_wait_for_their_own_interval_and_newer_values_win(store: Store) -> None:
    """A last-seen time refreshed by every probe waits for the lazy interval; a status change
    goes with the next flush, and its last-seen time replaces the lazy one."""
    gpu, cpu = registered(store, "gpu"), registered(store, "cpu")
    early, late = datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    writer = WriteBehind(store, flush_s=3600, lazy_flush_s=3600)
    writer.update_neuron(gpu, {"last_seen": early}, lazy=True)
    writer.update_neuron(cpu, {"last_seen": early}, lazy=True)
    writer.update_neuron(gpu, {"status": "offline", "last_seen": late})
    await writer.flush()
    seen = {row.name: (row.status, aware(row.last_seen)) for row in store.neurons()}
    assert seen == {"gpu": ("offline", late), "cpu": ("active", None)}  # cpu's waits
    await writer.aclose()  # closing writes the lazy ones too; gpu's older one is gone
    seen = {row.name: (row.status, aware(row.last_seen)) for row in store.neurons()}
    assert seen == {"gpu": ("offline", late), "cpu": ("active", early)}


async def test_lazy_updates_are_written_on_their_own_after_their_interval(store: Store) -> None:
    gpu = registered(store, "gpu")
    when = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    writer = WriteBehind(store, flush_s=0.01, lazy_flush_s=0.01)
    writer.update_neuron(gpu, {"last_seen": when}, lazy=True)
    for _ in range(500):
        if store.neurons()[0].last_seen is not None:
            break
        await asyncio.sleep(0.01)
    assert aware(store.neurons()[0].last_seen) == when
    await writer.aclose()
