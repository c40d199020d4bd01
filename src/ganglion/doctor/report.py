"""The report behind ``ganglion doctor``: one diagnosis per NVIDIA GPU, and the host.

``as_json`` gives the machine contract::

    {"gpus": [{"pci_id", "bdf", "name", "chip", "arch", "compute_capability", "driver_in_use",
               "guessed", "note", "paths": {...}, "cuda": {"max_major"}, "engines": {...},
               "live": {"state", "why", "fix"} or null, "recommended_path", "recommendation"}],
     "host": {"kernel", "distribution", "iommu": {"enabled", "groups"}, "nvidia_driver",
              "virtualization": {"guest", "hypervisor", "evidence"}},
     "live": {"driver", "flavour", "version", "cuda_driver_version", "cuda_ok", "why", "modules",
              "checked_with", "library", "gpus_initialised"},
     "cpu": {"model", "features", "llama_cpp": {"installed", "version", "features", "missing",
             "beyond_baseline", "wheel", "verdict", "message"}} or null,
     "message"}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ganglion.doctor import DoctorError
from ganglion.doctor.catalog import Catalog, GpuModel, default_catalog
from ganglion.doctor.cpu import CpuCheck
from ganglion.doctor.cuda import NOT_CHECKED, CudaCheck, CudaProbe
from ganglion.doctor.iommu import GroupCheck, check_group
from ganglion.doctor.live import InUse, Live, LoadedDriver, advise, judge, read_loaded, summarise
from ganglion.doctor.pciid import parse_nvidia_id, system_pci_ids
from ganglion.doctor.sysfs import (
    HostInfo,
    HostPaths,
    PciDevice,
    cpuinfo,
    iommu_groups,
    read_host,
    scan,
)
from ganglion.doctor.verdicts import (
    Diagnosis,
    Nouveau,
    Recommendation,
    cuda_max_major,
    driver_number,
    engines,
    nouveau,
    nvidia_open,
    nvidia_proprietary,
    recommend,
    vfio_passthrough,
)
from ganglion.llamacpp import InstalledBuild, PortableBuild, cpu_flags, cpu_model


@dataclass(frozen=True)
class GpuReport:
    """One GPU's diagnosis, with where it sits."""

    diagnosis: Diagnosis
    nouveau: Nouveau
    driver_in_use: str | None
    group: GroupCheck | None
    recommendation: Recommendation
    in_use: InUse | None = None

    @property
    def model(self) -> GpuModel:
        return self.diagnosis.model

    def as_json(self) -> dict[str, Any]:
        d, model = self.diagnosis, self.diagnosis.model
        return {
            "pci_id": str(model.pci_id),
            "bdf": d.bdf,
            "name": model.name,
            "chip": model.chip,
            "arch": model.arch,
            "compute_capability": model.compute_capability,
            "driver_in_use": self.driver_in_use,
            "guessed": model.guessed,
            "note": model.note,
            "iommu_group": self.group.group if self.group else None,
            "paths": {
                "nouveau": asdict(self.nouveau),
                "nvidia_open": asdict(d.open),
                "nvidia_proprietary": asdict(d.proprietary),
                "vfio_passthrough": asdict(d.vfio),
            },
            "cuda": {"max_major": d.cuda_major},
            "engines": asdict(d.engines),
            "live": self.in_use.as_json() if self.in_use else None,
            "recommended_path": self.recommendation.path,
            "recommendation": self.recommendation.text,
        }


@dataclass(frozen=True)
class Report:
    """The GPUs diagnosed, the host, its CPU against the llama.cpp build, and the NVIDIA GPUs
    the catalog could not place."""

    gpus: list[GpuReport]
    host: HostInfo
    message: str | None = None
    unknown: tuple[str, ...] = ()
    cpu: CpuCheck | None = None
    live: Live | None = None

    def as_json(self) -> dict[str, Any]:
        host, guest = self.host, self.host.guest
        return {
            "gpus": [gpu.as_json() for gpu in self.gpus],
            "host": {
                "kernel": host.kernel,
                "distribution": host.distribution,
                "iommu": {"enabled": host.iommu_enabled, "groups": host.iommu_groups},
                "nvidia_driver": host.nvidia_driver,
                "virtualization": {
                    "guest": guest is not None,
                    "hypervisor": guest.hypervisor if guest else None,
                    "evidence": list(guest.evidence) if guest else [],
                },
            },
            "live": self.live.as_json() if self.live else None,
            "cpu": self.cpu.as_json() if self.cpu else None,
            "unknown": list(self.unknown),
            "message": self.message,
        }


@dataclass(frozen=True)
class _Found:
    model: GpuModel
    device: PciDevice | None


def _driver_conflict(model: GpuModel, host: HostInfo) -> str | None:
    loaded = (host.nvidia_driver or "").split(".")[0]
    if not loaded.isdigit() or int(loaded) <= driver_number(model):
        return None
    return (
        f"this machine runs NVIDIA {host.nvidia_driver}, which no longer drives this GPU "
        f"(its last branch is {model.last_branch})"
    )


def _flavour_conflict(model: GpuModel, others: Sequence[_Found]) -> str | None:
    if model.open_modules != "no":
        return None
    for other in others:
        if other.model.open_modules == "required":
            where = f" at {other.device.bdf}" if other.device else ""
            return (
                f"the {other.model.name}{where} needs the open kernel modules, "
                "which cannot drive this GPU"
            )
    return None


@dataclass(frozen=True)
class _Machine:
    """What the diagnosis of each GPU reads about the machine."""

    host: HostInfo
    devices: Mapping[str, PciDevice]
    groups: Mapping[str, list[str]]
    loaded: LoadedDriver
    cuda: CudaCheck


def _diagnose(found: _Found, everyone: Sequence[_Found], machine: _Machine) -> GpuReport:
    model, device, host = found.model, found.device, machine.host
    group = check_group(device, machine.devices, machine.groups) if device else None
    others = [f for f in everyone if f is not found]
    conflict = _driver_conflict(model, host) or _flavour_conflict(model, others)
    diagnosis = Diagnosis(
        model=model,
        bdf=device.bdf if device else None,
        open=nvidia_open(model),
        proprietary=nvidia_proprietary(model, host.kernel),
        vfio=vfio_passthrough(host, group if device else None),
        cuda_major=cuda_max_major(model),
        engines=engines(model),
        conflict=conflict,
        guest=host.guest,
    )
    in_use = judge(model, device, machine.loaded, machine.cuda)
    return GpuReport(
        diagnosis,
        nouveau(model),
        device.driver if device else None,
        group,
        advise(recommend(diagnosis), diagnosis, in_use, machine.loaded),
        in_use,
    )


def nvidia_gpus(devices: Sequence[PciDevice]) -> list[PciDevice]:
    """The NVIDIA display and 3D controllers among ``devices``."""
    return [d for d in devices if d.pci_id.is_nvidia and d.is_display]


def _no_gpu_message(devices: Sequence[PciDevice], paths: HostPaths) -> str:
    displays = [f"{d.bdf} [{d.pci_id}]" for d in devices if d.is_display]
    seen = f" (display controllers: {', '.join(displays)})" if displays else ""
    return (
        f"No NVIDIA GPU found under {paths.sysfs}{seen}. Nothing to enlist on a GPU here; "
        "this node can still serve models on its CPU."
    )


def doctor(
    paths: HostPaths,
    pci_ids: Sequence[str] = (),
    kernel: str | None = None,
    catalog: Catalog | None = None,
    llama: Callable[[], InstalledBuild] | None = None,
    cuda: CudaProbe | None = None,
) -> Report:
    """Diagnose the NVIDIA GPUs in ``paths.sysfs``, or the ``pci_ids`` given instead; with
    ``llama`` (:func:`ganglion.llamacpp.read_build`), check the CPU against that build too;
    with ``cuda`` (:func:`ganglion.doctor.cuda.check_cuda`), check that CUDA initialises."""
    catalog = catalog or default_catalog()
    names = system_pci_ids(paths.pci_ids)
    wanted = [parse_nvidia_id(text) for text in pci_ids]
    host = read_host(paths, kernel)
    devices: list[PciDevice] = [] if wanted else scan(paths.sysfs)
    unknown: list[str] = []
    found = [_Found(catalog.lookup(pci_id, names), None) for pci_id in wanted]
    for device in nvidia_gpus(devices):
        try:
            found.append(_Found(catalog.lookup(device.pci_id, names), device))
        except DoctorError as error:
            unknown.append(f"{device.bdf}: {error}")
    loaded, checked = read_loaded(paths), cuda() if cuda else NOT_CHECKED
    machine = _Machine(
        host,
        {device.bdf: device for device in devices},
        iommu_groups(paths.sysfs) if devices else {},
        loaded,
        checked,
    )
    gpus = [_diagnose(f, found, machine) for f in found]
    message = None if gpus or unknown else _no_gpu_message(devices, paths)
    return Report(
        gpus,
        host,
        message,
        tuple(unknown),
        check_cpu(paths, llama) if llama else None,
        summarise(nvidia_gpus(devices), loaded, checked),
    )


def check_cpu(paths: HostPaths, llama: Callable[[], InstalledBuild]) -> CpuCheck:
    """This CPU (from ``paths.procfs``) against the llama.cpp build ``llama`` reports."""
    text = cpuinfo(paths.procfs)
    return CpuCheck(cpu_model(text), cpu_flags(text), llama(), PortableBuild.for_machine())
