"""A neuron's view is built as plain values (fast for a thousand neurons), and is exactly what
its schema, NeuronView, would dump: same fields, in the same order, with the same values."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from ganglion.fleet.neuron import Neuron, NeuronView, natural_key
from ganglion.fleet.status import NeuronStatus
from ganglion.gateway.events import LiveNeuron, live_view
from ganglion.neurons.base import Dialect, ModelMemory, TokenStats


def busy_neuron() -> Neuron:
    neuron = Neuron(
        id=1,
        name="gpu-2",
        url="http://gpu:11434",
        api=Dialect.OLLAMA,
        node="gpu",
        models=["llama3:latest", "qwen3:8b"],
        adapter=None,  # type: ignore[arg-type]  # a view never talks to the neuron
        status=NeuronStatus.DEGRADED,
        reason="decoding at 3.1 tok/s",
        last_seen=datetime(2026, 11, 30, 7, 0, 0, 123456, tzinfo=UTC),
        loaded=["llama3:latest"],
        memory={"llama3:latest": ModelMemory(4_000_000_000, 1_000_000_000)},
        idle_gpu="model partly on CPU",
        in_flight=2,
        slots=4,
    )
    stats = TokenStats(
        prompt_tokens=512, output_tokens=100, prefill_s=0.5, decode_s=3.0, load_s=1.25
    )
    neuron.speeds.observe("llama3:latest", stats)
    return neuron


def test_the_view_data_is_what_the_schema_dumps() -> None:
    neuron = busy_neuron()
    data = neuron.view_data()
    assert list(data) == list(NeuronView.model_fields)
    assert NeuronView.model_validate(data).model_dump(mode="json") == data
    assert data["speeds"] == {"llama3:latest": 33.33}
    assert data["last_seen"] == "2026-11-30T07:00:00.123456Z"


def test_the_live_view_is_what_its_schema_dumps() -> None:
    live = live_view(busy_neuron())
    assert LiveNeuron.model_validate(live).model_dump(mode="json") == live
    assert live["best_tokens_per_second"] == 33.33


def test_names_sort_in_natural_order() -> None:
    names = ["n10", "N2", "n1", "gpu-10", "gpu-9", "gpu-9a", "a"]
    assert sorted(names, key=natural_key) == ["a", "gpu-9", "gpu-9a", "gpu-10", "n1", "N2", "n10"]


def test_the_encoded_view_is_kept_until_something_it_shows_changes() -> None:
    neuron = busy_neuron()
    first = neuron.view_json()
    assert json.loads(first) == neuron.view_data()
    assert neuron.view_json() is first  # nothing changed: the same bytes
    changes: list[Callable[[Neuron], object]] = [
        lambda n: setattr(n, "status", NeuronStatus.OFFLINE),
        lambda n: setattr(n, "in_flight", 3),
        lambda n: n.models.append("phi4"),  # in place
        lambda n: n.speeds.observe("qwen3:8b", TokenStats(output_tokens=10, decode_s=1.0)),
        lambda n: setattr(n, "last_seen", datetime(2026, 12, 1, tzinfo=UTC)),
        lambda n: setattr(n, "memory", None),
    ]
    for change in changes:
        before = neuron.view_json()
        change(neuron)
        after = neuron.view_json()
        assert after != before
        assert json.loads(after) == neuron.view_data()
