"""Prefix caches through a real gateway and simulated neurons that keep a prompt cache
(``ganglion sim --cache-slots``): a conversation's next turn goes back to the neuron that
holds its earlier turns, though another is faster, and the answer's header, the request's
record in the store and ``/metrics`` say the hit was predicted; the neuron's own count says
it happened."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from ganglion.store import Store
from ganglion.store.schema import NeuronRow, SpeedSampleRow
from tests.conftest import Spawner

PIN = "X-Ganglion-Neuron"
CACHE = "X-Ganglion-Cache"
WORDS = 1500


def predictions(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.labels["neuron"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ganglion_prefix_cache_predictions_total"
    }


def traffic_samples(db_url: str, neuron: str, count: int) -> list[SpeedSampleRow]:
    """The neuron's traffic samples, once the gateway has written ``count`` of them."""
    store = Store.open(db_url)
    try:
        for _ in range(200):
            with store.engine.connect() as connection:
                rows = connection.execute(
                    select(SpeedSampleRow)
                    .join(NeuronRow, NeuronRow.id == SpeedSampleRow.neuron_id)
                    .where(NeuronRow.name == neuron, SpeedSampleRow.source == "traffic")
                    .order_by(SpeedSampleRow.id)
                ).all()
            if len(rows) >= count:
                return list(rows)  # type: ignore[arg-type]
            time.sleep(0.1)
        raise AssertionError(f"the gateway wrote {len(rows)} samples for {neuron}, not {count}")
    finally:
        store.engine.dispose()


def test_the_next_turn_goes_back_to_the_neuron_holding_the_conversation(
    spawn: Spawner, db_url: str
) -> None:
    fast = spawn.sim(200, model="llama3", extra=("--prefill-tps", "4000", "--cache-slots", "2"))
    slow = spawn.sim(100, model="llama3", extra=("--prefill-tps", "2000", "--cache-slots", "2"))
    gateway = spawn.gateway(db_url)
    for name, sim in (("a-fast", fast), ("b-slow", slow)):
        added = httpx.post(f"{gateway.url}/fleet/neurons", json={"url": sim.url, "name": name})
        assert added.status_code == 201, added.text
    benched = httpx.post(f"{gateway.url}/fleet/bench", json={"max_tokens": 16}, timeout=120)
    assert all(result["ok"] for result in benched.json()), benched.text

    messages: list[dict[str, Any]] = [{"role": "user", "content": "word " * WORDS}]
    body = {"model": "llama3", "stream": False, "options": {"num_predict": 8}}
    first = httpx.post(
        f"{gateway.url}/api/chat",
        json=body | {"messages": messages},
        headers={PIN: "b-slow"},
        timeout=60,
    )
    assert first.status_code == 200, first.text
    assert first.headers[CACHE] == "miss"
    messages += [first.json()["message"], {"role": "user", "content": "and then?"}]

    # Cache-blind, a-fast is quicker (it reads and writes twice as fast); b-slow holds all
    # but the last two messages, so it finishes first.
    second = httpx.post(f"{gateway.url}/api/chat", json=body | {"messages": messages}, timeout=60)
    assert second.status_code == 200, second.text
    assert second.headers[PIN] == "b-slow"
    assert second.headers[CACHE] == "hit"
    # the neuron's own count: the first prompt and the 8 tokens it answered, held after it
    assert second.json()["prompt_eval_cached_count"] == WORDS + 8
    messages += [second.json()["message"], {"role": "user", "content": "and?"}]

    third = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "llama3", "messages": messages, "max_tokens": 8},
        timeout=60,
    )
    assert third.status_code == 200, third.text
    assert (third.headers[PIN], third.headers[CACHE]) == ("b-slow", "hit")
    reported = third.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert reported > WORDS

    other = httpx.post(
        f"{gateway.url}/api/chat",
        json=body | {"messages": [{"role": "user", "content": "a new conversation " * 300}]},
        timeout=60,
    )
    assert (other.headers[PIN], other.headers[CACHE]) == ("a-fast", "miss")

    seen = predictions(gateway.url)
    assert seen[("b-slow", "miss")] == 1
    assert seen[("b-slow", "hit")] == 2
    assert seen[("a-fast", "miss")] == 1
    assert ("a-fast", "hit") not in seen

    rows = traffic_samples(db_url, "b-slow", 3)
    assert rows[0].predicted_cached_tokens == 0
    assert rows[0].cached_tokens is None  # the sim says nothing of an empty cache
    # the gateway's 4 chars a token, over the first prompt and the answer it read back
    answer = first.json()["message"]["content"]
    assert rows[1].predicted_cached_tokens == (WORDS * 5 + len(answer)) // 4
    assert rows[1].cached_tokens == WORDS + 8
    assert rows[2].cached_tokens == reported
