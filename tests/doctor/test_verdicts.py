"""The verdict rules, the CUDA and engines per GPU, and the recommendation."""

from __future__ import annotations

import pytest

from ganglion.doctor.catalog import GpuModel, default_catalog
from ganglion.doctor.facts import BRANCHES
from ganglion.doctor.pciid import parse_pci_id
from ganglion.doctor.report import doctor
from ganglion.doctor.sysfs import HostInfo
from ganglion.doctor.verdicts import (
    builds_on,
    cuda_max_major,
    engines,
    nouveau,
    nvidia_open,
    nvidia_proprietary,
    vfio_passthrough,
)


def model(device: str) -> GpuModel:
    return default_catalog().lookup(parse_pci_id(f"10de:{device}"), {})


def test_the_quadro_m4000_story() -> None:
    m4000 = model("13f1")
    assert (m4000.arch, m4000.compute_capability) == ("maxwell", "5.2")
    assert nouveau(m4000).cuda is False
    assert nvidia_open(m4000).works is False
    proprietary = nvidia_proprietary(m4000, "6.12.9")
    assert (proprietary.works, proprietary.last_branch) == (True, "580")
    assert cuda_max_major(m4000) == 12
    found = engines(m4000)
    assert (found.ollama, found.llama_cpp, found.vllm, found.tensorrt_llm) == (
        True,
        True,
        False,
        False,
    )
    assert found.pytorch == "cu126"


# (device, CUDA max major, ollama, llama.cpp, vLLM, TensorRT-LLM, PyTorch line)
ENGINE_CASES = [
    ("0191", 6, False, False, False, False, None),  # Tesla G80, 1.0
    ("06c0", 8, False, False, False, False, None),  # Fermi, 2.0
    ("1180", 10, False, False, False, False, None),  # Kepler 3.0
    ("1023", 11, False, False, False, False, None),  # Kepler 3.5
    ("1381", 12, True, True, False, False, "cu126"),  # Maxwell 5.0
    ("1b80", 12, True, True, False, False, "cu126"),  # Pascal 6.1
    ("1db4", 12, True, True, False, False, "cu128"),  # Volta 7.0
    ("1e04", 13, True, True, True, False, "cu130"),  # Turing 7.5
    ("2204", 13, True, True, True, True, "cu130"),  # Ampere 8.6
    ("2684", 13, True, True, True, True, "cu130"),  # Ada 8.9
    ("2330", 13, True, True, True, True, "cu130"),  # Hopper 9.0
    ("2b85", 13, True, True, True, True, "cu130"),  # Blackwell 12.0
    ("0040", 0, False, False, False, False, None),  # Curie: no CUDA
]


@pytest.mark.parametrize(
    ("device", "cuda", "ollama", "llama_cpp", "vllm", "trt", "pytorch"), ENGINE_CASES
)
def test_cuda_and_engines_per_architecture(
    device: str,
    cuda: int,
    ollama: bool,
    llama_cpp: bool,
    vllm: bool,
    trt: bool,
    pytorch: str | None,
) -> None:
    gpu = model(device)
    assert cuda_max_major(gpu) == cuda
    found = engines(gpu)
    assert (found.ollama, found.llama_cpp, found.vllm, found.tensorrt_llm) == (
        ollama,
        llama_cpp,
        vllm,
        trt,
    )
    assert found.pytorch == pytorch


def test_blackwell_requires_the_open_modules() -> None:
    rtx5090 = model("2b85")
    assert nvidia_open(rtx5090).required is True
    proprietary = nvidia_proprietary(rtx5090, "6.12.9")
    assert proprietary.works is False
    assert "only by the open kernel modules" in proprietary.why


def test_turing_takes_both_flavours() -> None:
    turing = model("1e04")
    assert nvidia_open(turing).works
    assert not nvidia_open(turing).required
    assert nvidia_proprietary(turing, "6.12.9").works


@pytest.mark.parametrize(
    ("branch", "kernel", "builds"),
    [
        ("470", "6.11.3", True),
        ("470", "6.12.9-amd64", False),
        ("390", "5.19.0", True),
        ("390", "6.1.0-18-amd64", False),
        ("340", "5.4.0", True),
        ("340", "5.10.0", False),
        ("580", "6.17.1", True),
        ("current", "7.0.0", True),
        ("304", "4.19.0", None),
        ("470", None, None),
    ],
)
def test_builds_on_kernel(branch: str, kernel: str | None, builds: bool | None) -> None:
    assert builds_on(BRANCHES[branch], kernel) is builds


def test_kepler_on_a_new_kernel_needs_patches() -> None:
    verdict = nvidia_proprietary(model("1023"), "6.12.9")
    assert (verdict.works, verdict.builds_on_kernel) == (False, False)
    assert "6.11" in verdict.why
    assert nvidia_proprietary(model("1023"), "6.1.0").works is True


def test_vfio_verdicts() -> None:
    off = HostInfo(kernel="6.12", distribution=None, iommu_enabled=False)
    assert vfio_passthrough(off, None).works is False
    on = HostInfo(kernel="6.12", distribution=None, iommu_enabled=True, iommu_groups=3)
    assert vfio_passthrough(on, None).works is None


def test_a_blackwell_beside_a_maxwell_sends_the_maxwell_to_a_vm(fake_host) -> None:
    host = fake_host()
    report = doctor(host.paths, ["10de:13f1", "10de:2b85"], kernel="6.12.9")
    m4000, rtx5090 = report.gpus
    assert m4000.recommendation.path == "vfio"
    assert "open kernel modules" in m4000.recommendation.text
    assert rtx5090.recommendation.path == "open"


def test_a_host_on_a_newer_driver_sends_the_maxwell_to_a_vm(fake_host) -> None:
    host = fake_host()
    host.nvidia_driver("590.44.01")
    report = doctor(host.paths, ["10de:13f1"])
    assert report.gpus[0].recommendation.path == "vfio"
    assert "590.44.01" in report.gpus[0].recommendation.text


def test_old_gpus_get_no_engine(fake_host) -> None:
    report = doctor(fake_host().paths, ["10de:1023", "10de:0040"])
    assert [gpu.recommendation.path for gpu in report.gpus] == ["none", "none"]


def test_host_facts_from_the_fake_host(m4000_host) -> None:
    report = doctor(m4000_host.paths)
    host = report.host
    assert (host.kernel, host.distribution) == ("6.12.9-amd64", "Debian GNU/Linux 13 (trixie)")
    assert (host.iommu_enabled, host.iommu_groups, host.cpu_vendor) == (True, 2, "intel")
    assert host.mem_total_mib == 64000
