"""A GPU present but contributing nothing: the rules (VRAM, the node's doctor report, speed),
the doctor's JSON as the gateway reads it, and the registry, the neuron's view and the
Prometheus gauges that say it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ganglion.doctor.report import doctor
from ganglion.errors import FleetError
from ganglion.fleet.placement import DoctorReport, NodeGpus, contributing_nothing
from ganglion.fleet.registry import Registry
from ganglion.fleet.status import NeuronStatus
from ganglion.gateway.metrics import Metrics
from ganglion.neurons.base import Dialect, ModelMemory
from ganglion.neurons.ollama import OllamaAdapter
from ganglion.store import Store
from tests.doctor.conftest import OPEN_580, FakeHost
from tests.doctor.cuda_fakes import H200_CUDA, NO_LIBCUDA
from tests.fakes import FakeFleet

GB = 1_000_000_000
NOW = datetime(2026, 11, 29, tzinfo=UTC)


def nouveau_report(root: Path) -> DoctorReport:
    """``ganglion doctor --json`` from a box whose Quadro M4000 runs nouveau."""
    host = FakeHost(root)
    host.gpu(driver="nouveau")
    host.module("nouveau")
    return DoctorReport.model_validate(doctor(host.paths, cuda=lambda: NO_LIBCUDA).as_json())


def h200_report(root: Path) -> DoctorReport:
    """``ganglion doctor --json`` from a working H200 box."""
    host = FakeHost(root)
    host.gpu("0000:00:06", "2335", audio=None, driver="nvidia", group=None)
    host.nvidia_loaded(OPEN_580, "580.159.04")
    return DoctorReport.model_validate(doctor(host.paths, cuda=lambda: H200_CUDA).as_json())


def node(report: DoctorReport, name: str = "gpu-box") -> NodeGpus:
    return NodeGpus.from_report(name, report, NOW)


# the doctor's JSON, as the gateway reads it


def test_a_nouveau_box_reports_a_gpu_that_contributes_nothing(tmp_path: Path) -> None:
    gpus = node(nouveau_report(tmp_path / "box"))
    assert (gpus.gpus, gpus.cuda_ok, gpus.bandwidth_gbps) == (("Quadro M4000",), False, None)
    assert (
        gpus.trouble
        == "Quadro M4000: nouveau drives it: display only, never CUDA, so models run on CPU"
    )
    assert NodeGpus.from_json(gpus.as_json()) == gpus


def test_a_working_h200_box_reports_its_bandwidth_and_no_trouble(tmp_path: Path) -> None:
    gpus = node(h200_report(tmp_path / "box"))
    assert (gpus.gpus, gpus.cuda_ok, gpus.trouble) == (("H200",), True, None)
    assert gpus.bandwidth_gbps == pytest.approx(4022.8)


def test_a_box_without_gpus_reports_none(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "cpu")
    report = DoctorReport.model_validate(doctor(host.paths, cuda=lambda: NO_LIBCUDA).as_json())
    gpus = node(report)
    assert (gpus.gpus, gpus.trouble) == ((), None)


# the rules


def test_a_model_wholly_on_the_cpu_counts_only_where_a_gpu_is_known(tmp_path: Path) -> None:
    memory = {"llama3.2:3b": ModelMemory(4_700_000_000, 0)}
    assert contributing_nothing("cpu-box", memory, {}, None, vram_on_node=False) is None
    reason = contributing_nothing("gpu-box", memory, {}, node(h200_report(tmp_path)), False)
    assert reason == (
        "model on CPU: 0 of 4.7 GB in VRAM (llama3.2:3b); run `ganglion doctor` on gpu-box"
    )
    by_vram = contributing_nothing("gpu-box", memory, {}, None, vram_on_node=True)
    assert by_vram == reason


def test_a_model_partly_on_the_cpu_proves_the_gpu() -> None:
    memory = {"llama3.1:70b": ModelMemory(42 * GB, 21 * GB)}
    reason = contributing_nothing("gpu-box", memory, {}, None, vram_on_node=False)
    assert reason is not None
    assert reason.startswith("model partly on CPU: 21.0 of 42.0 GB in VRAM (llama3.1:70b)")


def test_a_model_wholly_in_vram_is_fine(tmp_path: Path) -> None:
    memory = {"llama3.2:3b": ModelMemory(4_700_000_000, 4_700_000_000)}
    report = node(h200_report(tmp_path))
    assert contributing_nothing("gpu-box", memory, {"llama3.2:3b": 180.0}, report, True) is None


def test_the_doctor_report_speaks_when_no_model_is_loaded(tmp_path: Path) -> None:
    reason = contributing_nothing("gpu-box", None, {}, node(nouveau_report(tmp_path)), False)
    assert reason is not None
    assert reason.startswith("GPU present but contributing nothing: Quadro M4000: nouveau")
    assert reason.endswith("; run `ganglion doctor` on gpu-box")


def test_a_model_in_vram_outweighs_an_older_doctor_report(tmp_path: Path) -> None:
    report = node(nouveau_report(tmp_path))
    assert contributing_nothing("gpu-box", None, {}, report, vram_on_node=True) is None


def test_decoding_far_below_the_gpu_class_is_flagged(tmp_path: Path) -> None:
    """An H200 (4 TB/s) holds a 4.7 GB model: bandwidth bounds decode near 860 tok/s, and
    6 tok/s is a CPU's speed. 180 tok/s is an engine on that GPU."""
    report = node(h200_report(tmp_path))
    memory = {"llama3.2:3b": ModelMemory(4_700_000_000, 4_700_000_000)}
    slow = contributing_nothing("gpu-box", memory, {"llama3.2:3b": 6.0}, report, True)
    assert slow is not None
    assert slow.startswith("decoding llama3.2:3b at 6.0 tok/s, far below what its node's 4023 GB/s")
    assert contributing_nothing("gpu-box", memory, {"llama3.2:3b": 180.0}, report, True) is None
    tagged = {"llama3:latest": ModelMemory(4_700_000_000, 4_700_000_000)}
    assert contributing_nothing("gpu-box", tagged, {"llama3": 6.0}, report, True) is not None


# the registry, the neuron's view and the gauges


def registry_on(tmp_path: Path, fleet: FakeFleet) -> Registry:
    store = Store.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    return Registry(store, transport=fleet.transport())


async def test_the_registry_marks_a_neuron_whose_node_has_an_idle_gpu(tmp_path: Path) -> None:
    fleet = FakeFleet()
    fake = fleet.add("gpu-box:11434", models=["llama3.2:3b"])
    fake.in_memory = {"llama3.2:3b": (4_700_000_000, 0)}
    registry = registry_on(tmp_path, fleet)
    neuron = await registry.add("http://gpu-box:11434", api=Dialect.OLLAMA)
    await registry.probe(neuron)
    assert (neuron.status, neuron.idle_gpu) == (NeuronStatus.ACTIVE, None)  # a CPU box, maybe

    await registry.report_node("gpu-box", nouveau_report(tmp_path / "box"))
    expected = "model on CPU: 0 of 4.7 GB in VRAM (llama3.2:3b); run `ganglion doctor` on gpu-box"
    assert (neuron.status, neuron.reason, neuron.idle_gpu) == (
        NeuronStatus.DEGRADED,
        expected,
        expected,
    )
    view = neuron.view()
    assert view.memory == {"llama3.2:3b": {"size_bytes": 4_700_000_000, "vram_bytes": 0}}
    assert view.idle_gpu == expected
    metrics = Metrics()
    metrics.watch(registry.neurons)
    text = metrics.exposition().decode()
    assert 'ganglion_neuron_idle_gpu{neuron="gpu-box-11434"} 1.0' in text
    assert (
        'ganglion_neuron_model_vram_ratio{model="llama3.2:3b",neuron="gpu-box-11434"} 0.0' in text
    )

    fake.in_memory = {"llama3.2:3b": (4_700_000_000, 4_700_000_000)}
    await registry.report_node("gpu-box", h200_report(tmp_path / "fixed"))
    await registry.probe(neuron)
    assert (neuron.status, neuron.idle_gpu) == (NeuronStatus.ACTIVE, None)
    assert 'ganglion_neuron_idle_gpu{neuron="gpu-box-11434"} 0.0' in metrics.exposition().decode()
    await registry.aclose()


async def test_another_model_in_vram_on_the_node_is_proof_of_a_gpu(tmp_path: Path) -> None:
    fleet = FakeFleet()
    fleet.add("gpu-box:11434", models=["big"]).in_memory = {"big": (8 * GB, 8 * GB)}
    fleet.add("gpu-box:8080", models=["small"]).in_memory = {"small": (2 * GB, 0)}
    registry = registry_on(tmp_path, fleet)
    on_gpu = await registry.add("http://gpu-box:11434", api=Dialect.OLLAMA)
    on_cpu = await registry.add("http://gpu-box:8080", api=Dialect.OLLAMA)
    await registry.probe_all()
    assert on_gpu.idle_gpu is None
    assert on_cpu.idle_gpu is not None
    assert on_cpu.idle_gpu.startswith("model on CPU: 0 of 2.0 GB in VRAM (small)")
    await registry.aclose()


async def test_node_reports_are_kept_in_the_store_for_every_replica(tmp_path: Path) -> None:
    fleet = FakeFleet()
    first = registry_on(tmp_path, fleet)
    await first.report_node("gpu-box", nouveau_report(tmp_path / "box"))
    second = registry_on(tmp_path, fleet)
    await second.load()
    assert [report.node for report in second.nodes()] == ["gpu-box"]
    await first.report_node("gpu-box", h200_report(tmp_path / "fixed"))
    await second.sync()
    assert second.nodes()[0].trouble is None
    await first.aclose()
    await second.aclose()


async def test_the_node_reports_have_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ganglion.fleet.registry.MAX_NODES", 2)
    registry = registry_on(tmp_path, FakeFleet())
    report = DoctorReport()
    await registry.report_node("a", report)
    await registry.report_node("b", report)
    with pytest.raises(FleetError, match="at most 2 nodes"):
        await registry.report_node("c", report)
    await registry.report_node("a", report)  # a node already known may report again
    assert [r.node for r in registry.nodes()] == ["a", "b"]
    await registry.aclose()


async def test_the_ollama_adapter_reads_where_each_model_is() -> None:
    fleet = FakeFleet()
    fleet.add("gpu-box:11434", models=["a", "b"]).in_memory = {"a": (GB, GB // 2)}
    adapter = OllamaAdapter("http://gpu-box:11434", transport=fleet.transport())
    probe = await adapter.probe()
    assert probe.loaded == ["a"]
    assert probe.memory == {"a": ModelMemory(GB, GB // 2)}
    await adapter.aclose()
