from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ganglion.clock import aware, utcnow
from ganglion.errors import DuplicateNeuron, StoreError, UnknownNeuron
from ganglion.neurons.base import TokenStats
from ganglion.store import SpeedSample, Store
from ganglion.store.db import table_names
from ganglion.store.queries import SAMPLE_COLUMNS
from ganglion.store.schema import Base, NeuronRow, SpeedSampleRow


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


def neuron(name: str = "gpu", url: str = "http://127.0.0.1:11434") -> NeuronRow:
    return NeuronRow(
        name=name, url=url, api="ollama", node="box", models=["llama3"], status="active"
    )


def test_migrations_create_every_table_and_match_the_schema(store: Store) -> None:
    assert {"neurons", "speed_samples", "runs", "delegations", "api_keys"} <= table_names(
        store.engine
    )
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_migrating_twice_is_harmless(store_url: str) -> None:
    Store.open(store_url).close()
    again = Store.open(store_url)
    assert "neurons" in table_names(again.engine)
    again.close()


def test_neurons_round_trip(store: Store) -> None:
    store.add_neuron(neuron())
    store.update_neuron("gpu", status="offline", reason="2 probes failed")
    (row,) = store.neurons()
    assert (row.name, row.api, row.models, row.status) == ("gpu", "ollama", ["llama3"], "offline")
    assert row.reason == "2 probes failed"


def test_duplicate_name_or_url_is_refused_with_advice(store: Store) -> None:
    store.add_neuron(neuron())
    with pytest.raises(DuplicateNeuron, match="already registered"):
        store.add_neuron(neuron(url="http://127.0.0.1:9999"))
    with pytest.raises(DuplicateNeuron):
        store.add_neuron(neuron(name="other"))
    assert [row.name for row in store.neurons()] == ["gpu"]


def test_samples_are_kept_in_order_and_go_with_their_neuron(store: Store) -> None:
    row = store.add_neuron(neuron())
    for tokens in (10, 20, 30):
        stats = TokenStats(output_tokens=tokens, decode_s=1.0, wall_s=1.5)
        store.add_sample(row.id, "llama3", "bench", stats)
    samples = store.samples(row.id, limit=2)
    assert [s.tokens_per_second for s in samples] == [20.0, 30.0]
    assert samples[0].source == "bench"
    store.remove_neuron("gpu")
    assert store.samples(row.id) == []


def test_removing_an_unknown_neuron_says_so(store: Store) -> None:
    with pytest.raises(UnknownNeuron, match="no neuron named 'ghost'"):
        store.remove_neuron("ghost")


def test_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot open the database") as caught:
        Store.open("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(caught.value)


def test_a_busy_neurons_history_is_cut_back_to_its_newest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ganglion.store import queries

    monkeypatch.setattr(queries, "KEEP_SAMPLES", 10)
    monkeypatch.setattr(queries, "PRUNE_EVERY", 5)
    row = store.add_neuron(neuron())
    for tokens in range(1, 26):
        store.add_sample(
            row.id, "llama3", "traffic", TokenStats(output_tokens=tokens, decode_s=1.0)
        )
    kept = [s.output_tokens for s in store.samples(row.id, limit=100)]
    assert 10 <= len(kept) < 15
    assert kept[-10:] == list(range(16, 26))


def stats_of(tokens: int) -> TokenStats:
    return TokenStats(output_tokens=tokens, decode_s=1.0)


def test_a_flush_cuts_back_only_when_the_ids_pass_a_multiple_and_only_its_neurons(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ganglion.store import queries

    monkeypatch.setattr(queries, "KEEP_SAMPLES", 10)
    monkeypatch.setattr(queries, "PRUNE_EVERY", 5)
    a = store.add_neuron(neuron("a", "http://127.0.0.1:1")).id
    b = store.add_neuron(neuron("b", "http://127.0.0.1:2")).id

    def write(neuron_id: int, tokens: range) -> int:
        samples = [SpeedSample(neuron_id, "llama3", "traffic", stats_of(t)) for t in tokens]
        return store.write_behind(samples, {})

    def kept(neuron_id: int) -> list[int | None]:
        return [s.output_tokens for s in store.samples(neuron_id, limit=100)]

    assert write(a, range(1, 13)) == 12  # ids 1-12 pass 5 and 10: a is cut to its newest 10
    assert kept(a) == list(range(3, 13))
    assert write(b, range(13, 16)) == 3  # ids 13-15 pass 15: only b, which is short, is cut
    assert (kept(a), kept(b)) == (list(range(3, 13)), [13, 14, 15])
    assert write(a, range(16, 17)) == 1  # id 16 passes no multiple: nothing is cut
    assert kept(a) == [*range(3, 13), 16]


def test_a_flush_skips_a_removed_neuron_and_still_updates_the_others(store: Store) -> None:
    kept = store.add_neuron(neuron("kept", "http://127.0.0.1:1")).id
    gone = store.add_neuron(neuron("gone", "http://127.0.0.1:2")).id
    store.remove_neuron("gone")
    samples = [SpeedSample(i, "llama3", "traffic", stats_of(t)) for t, i in enumerate((kept, gone))]
    updates = {kept: {"status": "degraded", "reason": "slow"}, gone: {"status": "offline"}}
    assert store.write_behind(samples, updates) == 1
    (row,) = store.neurons()
    assert (row.name, row.status, row.reason) == ("kept", "degraded", "slow")
    assert [s.output_tokens for s in store.samples(kept)] == [0]
    assert store.write_behind(samples[1:], {}) == 0  # only the removed neuron's: nothing


def test_every_field_of_a_sample_is_written(store: Store) -> None:
    gpu = store.add_neuron(neuron()).id
    stats = TokenStats(
        prompt_tokens=900,
        output_tokens=120,
        prefill_s=0.25,
        decode_s=1.5,
        load_s=None,
        ttft_s=0.3,
        wall_s=1.8,
        cached_tokens=512,
    )
    before = utcnow()
    store.write_behind([SpeedSample(gpu, "llama3", "bench", stats, 500)], {})
    (row,) = store.samples(gpu)
    fields = {column: getattr(row, column) for column in SAMPLE_COLUMNS}
    assert before <= aware(fields.pop("created_at")) <= utcnow()
    assert fields == {
        "neuron_id": gpu,
        "model": "llama3",
        "source": "bench",
        "prompt_tokens": 900,
        "cached_tokens": 512,
        "predicted_cached_tokens": 500,
        "output_tokens": 120,
        "prefill_s": 0.25,
        "decode_s": 1.5,
        "load_s": None,
        "ttft_s": 0.3,
        "wall_s": 1.8,
        "tokens_per_second": 80.0,
    }


def test_the_sample_columns_are_every_column_but_the_id() -> None:
    """A column added to the table must be added to the driver's insert too."""
    table = SpeedSampleRow.__table__
    assert tuple(c.name for c in table.columns if not c.primary_key) == SAMPLE_COLUMNS
