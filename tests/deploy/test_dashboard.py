"""The Grafana dashboard (deploy/helm/ganglion/dashboards/ganglion.json) draws only series that
the gateway's ``/metrics`` really exports, grouped by labels those series carry, and it draws
what the Synapse monitor shows: per-neuron decode, prefill and load speeds, statuses, and
run timings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ganglion.fleet.status import NeuronStatus
from ganglion.gateway.metrics import RUN_PHASES, Metrics
from ganglion.neurons.base import TokenStats

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/helm/ganglion/dashboards/ganglion.json"
SERIES = re.compile(r"\bganglion_[a-z_]+\b")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Every sample name ``/metrics`` can show, with the labels it carries."""
    metrics = Metrics()
    metrics.request_started("gpu", "llama3", "/api/chat")
    stats = TokenStats(
        prompt_tokens=10, output_tokens=20, prefill_s=0.1, decode_s=0.2, load_s=1.0, ttft_s=0.3
    )
    metrics.request_finished("gpu", "llama3", "/api/chat", stats)
    metrics.request_started("gpu", "llama3", "/api/chat")
    metrics.request_failed("gpu", "llama3", "/api/chat", "timeout")
    timings = {f"{phase}_s": 1.0 for phase in RUN_PHASES}
    metrics.run_event("r", {"type": "done", "run": {"status": "completed", "timings": timings}})
    speeds = {"llama3": 50.0}
    book = SimpleNamespace(by_model=lambda: speeds, prefill=speeds, loads={"llama3": 2.0})
    memory = {"llama3": SimpleNamespace(size_bytes=4_700_000_000, vram_bytes=0)}
    neuron = SimpleNamespace(
        name="gpu",
        status=NeuronStatus.ACTIVE,
        is_active=True,
        speeds=book,
        idle_gpu="model on CPU: 0 of 4.7 GB in VRAM",
        memory=memory,
    )
    metrics.watch(lambda: [neuron])  # the fleet is read at scrape time
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_series_drawn_is_exported_with_the_labels_it_is_grouped_by() -> None:
    series = exported()
    assert "ganglion_neuron_prefill_tokens_per_second" in series  # the collector was read
    for title, expr in targets():
        used = set(SERIES.findall(expr))
        assert used, (title, expr)
        assert used <= set(series), (title, used - set(series))
        labels = set().union(*(series[name] for name in used)) | {"le"}
        for grouping in GROUPING.findall(expr):
            grouped = {label.strip() for label in grouping.split(",")}
            assert grouped <= labels, (title, grouped - labels)
        assert expr.count("(") == expr.count(")"), (title, expr)


def test_it_draws_what_the_monitor_shows() -> None:
    drawn = " ".join(expr for _, expr in targets())
    for wanted in (
        "ganglion_neuron_tokens_per_second",  # decode speed
        "ganglion_neuron_prefill_tokens_per_second",
        "ganglion_neuron_load_seconds",
        "ganglion_neuron_status",
        "ganglion_run_seconds_bucket",  # run timings, by phase
        "ganglion_runs_total",
    ):
        assert wanted in drawn, wanted


def test_every_panel_reads_the_chosen_prometheus() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert "ganglion_neuron_active" in variables["neuron"]["definition"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
