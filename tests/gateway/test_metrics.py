"""Prometheus metrics: the Metrics methods, a real bench through the app, the fleet's state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ganglion.gateway.metrics import MAX_UNSETTLED, Metrics
from ganglion.gateway.state import Gateway
from ganglion.neurons.base import TokenStats
from tests.fakes import FakeFleet, in_process

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(metrics: Metrics) -> Samples:
    return parse(metrics.exposition().decode())


GPU = {"neuron": "gpu", "model": "llama3"}


def test_a_request_that_finishes() -> None:
    metrics = Metrics()
    metrics.request_started("gpu", "llama3", "/api/chat")
    during = scrape(metrics)
    assert value(during, "ganglion_requests_total", **GPU, endpoint="/api/chat") == 1
    assert value(during, "ganglion_requests_in_flight", **GPU) == 1
    stats = TokenStats(
        prompt_tokens=10,
        output_tokens=40,
        prefill_s=0.2,
        decode_s=0.5,
        load_s=1.5,
        ttft_s=0.3,
        wall_s=2.3,
    )
    metrics.request_finished("gpu", "llama3", "/api/chat", stats)
    after = scrape(metrics)
    assert value(after, "ganglion_requests_in_flight", **GPU) == 0
    assert value(after, "ganglion_prompt_tokens_total", **GPU) == 10
    assert value(after, "ganglion_output_tokens_total", **GPU) == 40
    assert value(after, "ganglion_prefill_seconds_total", **GPU) == pytest.approx(0.2)
    assert value(after, "ganglion_decode_seconds_total", **GPU) == pytest.approx(0.5)
    assert value(after, "ganglion_load_seconds_total", **GPU) == pytest.approx(1.5)
    ttft = "ganglion_time_to_first_token_seconds"
    assert value(after, f"{ttft}_count", **GPU) == 1
    assert value(after, f"{ttft}_sum", **GPU) == pytest.approx(0.3)
    assert value(after, f"{ttft}_bucket", **GPU, le="0.25") == 0
    assert value(after, f"{ttft}_bucket", **GPU, le="0.5") == 1
    assert value(after, "ganglion_request_errors_total", **GPU, endpoint="/api/chat") is None


def test_unknown_stats_add_nothing() -> None:
    metrics = Metrics()
    metrics.request_started("cpu", "qwen", "/v1/chat/completions")
    metrics.request_finished("cpu", "qwen", "/v1/chat/completions", TokenStats(wall_s=1.0))
    samples = scrape(metrics)
    cpu = {"neuron": "cpu", "model": "qwen"}
    assert value(samples, "ganglion_output_tokens_total", **cpu) is None
    assert value(samples, "ganglion_time_to_first_token_seconds_count", **cpu) is None
    assert value(samples, "ganglion_requests_in_flight", **cpu) == 0


def test_a_negative_amount_adds_nothing_and_endpoints_count_apart() -> None:
    metrics = Metrics()
    for endpoint in ("/api/chat", "/v1/chat/completions", "/api/chat"):
        metrics.request_started("gpu", "llama3", endpoint)
    odd = TokenStats(prompt_tokens=-5, output_tokens=7, decode_s=-0.1)
    for endpoint in ("/api/chat", "/v1/chat/completions"):
        metrics.request_finished("gpu", "llama3", endpoint, odd)
    metrics.prefix_predicted("gpu", "llama3", 12)
    metrics.prefix_predicted("gpu", "llama3", 0)
    samples = scrape(metrics)
    requests = "ganglion_requests_total"
    assert value(samples, requests, **GPU, endpoint="/api/chat") == 2
    assert value(samples, requests, **GPU, endpoint="/v1/chat/completions") == 1
    assert value(samples, "ganglion_requests_in_flight", **GPU) == 1
    assert value(samples, "ganglion_prompt_tokens_total", **GPU) == 0  # there, at nothing
    assert value(samples, "ganglion_decode_seconds_total", **GPU) == 0
    assert value(samples, "ganglion_output_tokens_total", **GPU) == 14
    assert value(samples, "ganglion_load_seconds_total", **GPU) is None  # never said
    predictions = "ganglion_prefix_cache_predictions_total"
    assert value(samples, predictions, **GPU, outcome="hit") == 1
    assert value(samples, predictions, **GPU, outcome="miss") == 1
    assert value(samples, "ganglion_prefix_cache_predicted_tokens_total", **GPU) == 12
    metrics.request_finished("gpu", "llama3", "/api/chat", TokenStats(output_tokens=1))
    again = scrape(metrics)  # settled once: a second scrape adds only what came since
    assert value(again, requests, **GPU, endpoint="/api/chat") == 2
    assert value(again, "ganglion_output_tokens_total", **GPU) == 15
    assert value(again, predictions, **GPU, outcome="hit") == 1
    assert value(again, "ganglion_requests_in_flight", **GPU) == 0


@pytest.mark.parametrize("kind", ["unreachable", "http_error", "stream_broken", "timeout"])
def test_a_request_that_fails(kind: str) -> None:
    metrics = Metrics()
    metrics.request_started("gpu", "llama3", "/api/generate")
    metrics.request_failed("gpu", "llama3", "/api/generate", kind)
    samples = scrape(metrics)
    errors = "ganglion_request_errors_total"
    assert value(samples, errors, **GPU, endpoint="/api/generate", kind=kind) == 1
    assert value(samples, "ganglion_requests_in_flight", **GPU) == 0


def test_a_rejection_before_any_start_leaves_in_flight_alone() -> None:
    metrics = Metrics()
    metrics.request_failed("gpu", "llama3", "/api/chat", "rejected")
    samples = scrape(metrics)
    errors = "ganglion_request_errors_total"
    assert value(samples, errors, **GPU, endpoint="/api/chat", kind="rejected") == 1
    assert value(samples, "ganglion_requests_in_flight", **GPU) in (None, 0)


def test_an_unknown_kind_is_a_bug() -> None:
    with pytest.raises(ValueError, match="boom"):
        Metrics().request_failed("gpu", "llama3", "/api/chat", "boom")


def test_what_waits_for_a_scrape_is_bounded() -> None:
    metrics = Metrics()
    stats = TokenStats(output_tokens=1, ttft_s=0.3)
    for _ in range(MAX_UNSETTLED + 1):
        metrics.request_started("gpu", "llama3", "/api/chat")
        metrics.request_finished("gpu", "llama3", "/api/chat", stats)
    tally = metrics._tallies["gpu", "llama3"]
    assert len(metrics._tallies) == 1  # one per neuron and model, whatever the requests
    assert len(tally.answers) == 1  # the first MAX_UNSETTLED went into the series
    assert tally.requests == {"/api/chat": 1}  # one sum per series
    samples = scrape(metrics)
    count = value(samples, "ganglion_time_to_first_token_seconds_count", **GPU)
    assert count == MAX_UNSETTLED + 1
    assert value(samples, "ganglion_requests_total", **GPU, endpoint="/api/chat") == count


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.request_started("gpu", "llama3", "bench")
    assert value(scrape(second), "ganglion_requests_total", **GPU, endpoint="bench") is None


# through the app


@pytest.fixture
async def app_client(
    fleet: FakeFleet, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    async with in_process(fleet, tmp_path / "g.db") as (app, client):
        assert app.state.metrics is app.state.gateway.metrics
        await client.post("/fleet/neurons", json={"url": "http://gpu:11434", "name": "gpu"})
        await client.post("/fleet/neurons", json={"url": "http://cpu:11434", "name": "cpu"})
        yield client, app.state.gateway


async def get_metrics(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_a_bench_shows_in_the_series(
    app_client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = app_client
    await client.post("/fleet/bench", json={"max_tokens": 32})
    samples = await get_metrics(client)
    for neuron, model, tps in [
        ("gpu", "llama3", 90.0),
        ("cpu", "llama3", 13.0),
        ("cpu", "qwen", 13.0),
    ]:
        labels = {"neuron": neuron, "model": model}
        assert value(samples, "ganglion_requests_total", **labels, endpoint="bench") == 1
        assert value(samples, "ganglion_requests_in_flight", **labels) == 0
        assert value(samples, "ganglion_output_tokens_total", **labels) == 32
        assert value(samples, "ganglion_prompt_tokens_total", **labels) == 12
        decode = value(samples, "ganglion_decode_seconds_total", **labels)
        assert decode == pytest.approx(32 / tps, rel=0.01)
        assert value(samples, "ganglion_prefill_seconds_total", **labels) == pytest.approx(0.001)
        assert value(samples, "ganglion_time_to_first_token_seconds_count", **labels) == 1
        speed = value(samples, "ganglion_neuron_tokens_per_second", **labels)
        assert speed == pytest.approx(tps, rel=0.01)


async def test_measured_prefill_and_load_show_in_the_series(
    app_client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, gateway = app_client
    prefill, load = "ganglion_neuron_prefill_tokens_per_second", "ganglion_neuron_load_seconds"
    assert value(await get_metrics(client), prefill, **GPU) is None  # nothing measured yet
    gpu = gateway.registry.get("gpu")
    cold = TokenStats(prompt_tokens=400, output_tokens=10, prefill_s=0.5, decode_s=0.1, load_s=3)
    await gateway.registry.record_success(gpu, "llama3", cold)
    samples = await get_metrics(client)
    assert value(samples, prefill, **GPU) == pytest.approx(800.0)
    assert value(samples, load, **GPU) == pytest.approx(3.0)
    assert value(samples, load, neuron="cpu", model="llama3") is None


async def test_a_failed_bench_counts_an_error(
    app_client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    client, _ = app_client
    fleet.neurons["gpu:11434"].up = False
    await client.post("/fleet/bench", json={"neurons": ["gpu"], "max_tokens": 16})
    samples = await get_metrics(client)
    errors = "ganglion_request_errors_total"
    assert value(samples, errors, **GPU, endpoint="bench", kind="unreachable") == 1
    assert value(samples, "ganglion_requests_in_flight", **GPU) == 0


async def test_status_series_follow_a_neuron_going_offline(
    app_client: tuple[httpx.AsyncClient, Gateway], fleet: FakeFleet
) -> None:
    client, gateway = app_client

    def status_of(samples: Samples, neuron: str) -> dict[str, float | None]:
        return {
            status: value(samples, "ganglion_neuron_status", neuron=neuron, status=status)
            for status in ("active", "degraded", "offline", "suspended")
        }

    samples = await get_metrics(client)
    assert status_of(samples, "gpu") == {
        "active": 1,
        "degraded": 0,
        "offline": 0,
        "suspended": 0,
    }
    assert value(samples, "ganglion_neuron_active", neuron="gpu") == 1
    fleet.neurons["gpu:11434"].up = False
    for _ in range(2):  # hysteresis: two failed probes
        await gateway.registry.probe_all()
    samples = await get_metrics(client)
    assert status_of(samples, "gpu") == {
        "active": 0,
        "degraded": 0,
        "offline": 1,
        "suspended": 0,
    }
    assert value(samples, "ganglion_neuron_active", neuron="gpu") == 0
    assert value(samples, "ganglion_neuron_active", neuron="cpu") == 1
    await client.post("/fleet/neurons/cpu/suspend")
    samples = await get_metrics(client)
    assert status_of(samples, "cpu")["suspended"] == 1
    assert value(samples, "ganglion_neuron_active", neuron="cpu") == 0
    await client.delete("/fleet/neurons/cpu")
    assert value(await get_metrics(client), "ganglion_neuron_active", neuron="cpu") is None


# runs


def test_each_ended_run_counts_once_with_its_phases() -> None:
    metrics = Metrics()
    timings = {"decompose_s": 1.5, "parallel_s": 20.0, "synthesize_s": 3.0, "total_s": 24.5}
    done = {"id": "r1", "status": "completed", "timings": timings | {"first_token_s": 4.0}}
    metrics.run_event("r1", {"type": "run", "run": done})  # progress: not counted
    assert value(scrape(metrics), "ganglion_runs_total", status="completed") is None
    metrics.run_event("r1", {"type": "done", "run": done})
    metrics.run_event("r2", {"type": "done", "run": {"status": "failed", "timings": {}}})
    metrics.run_event("r3", {"type": "done", "run": {"status": "weird", "timings": None}})
    samples = scrape(metrics)
    assert value(samples, "ganglion_runs_total", status="completed") == 1
    assert value(samples, "ganglion_runs_total", status="failed") == 1
    assert value(samples, "ganglion_runs_total", status="other") == 1
    assert value(samples, "ganglion_runs_total", status="weird") is None  # labels stay bounded
    seconds = "ganglion_run_seconds"
    for phase, spent in (("decompose", 1.5), ("parallel", 20.0), ("first_token", 4.0)):
        assert value(samples, f"{seconds}_count", phase=phase) == 1
        assert value(samples, f"{seconds}_sum", phase=phase) == pytest.approx(spent)
    assert value(samples, f"{seconds}_bucket", phase="total", le="30.0") == 1
    assert value(samples, f"{seconds}_bucket", phase="total", le="10.0") == 0


async def test_a_real_run_through_the_app_shows_in_the_run_series(
    app_client: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = app_client
    task = {"task": "say hi", "model": "llama3", "decompose": "never"}
    started = await client.post("/fleet/runs", json=task)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    for _ in range(500):  # the run's done event comes just after its record says so
        samples = await get_metrics(client)
        if value(samples, "ganglion_runs_total", status="completed"):
            break
        await asyncio.sleep(0.02)
    assert (await client.get(f"/fleet/runs/{run_id}")).json()["status"] == "completed"
    assert value(samples, "ganglion_runs_total", status="completed") == 1
    assert value(samples, "ganglion_run_seconds_count", phase="total") == 1
    assert value(samples, "ganglion_run_seconds_count", phase="parallel") == 1
