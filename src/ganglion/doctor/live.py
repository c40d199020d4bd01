"""What is loaded and working now, as opposed to what would work.

The NVIDIA kernel module's flavour (open or proprietary) and version come from
``/proc/driver/nvidia/version``; the modules loaded from ``/sys/module``; whether CUDA really
initialises from :mod:`ganglion.doctor.cuda`. For each GPU, :func:`judge` says whether the
driver that holds it works for it (``working``), works but CUDA does not (``broken``), is the
wrong one for the card (``wrong``: nouveau on a CUDA card, a branch too new, the wrong
flavour), and :func:`advise` turns that into the recommendation: enlist a working card, fix a
wrong one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ganglion.doctor.catalog import GpuModel
from ganglion.doctor.cuda import NOT_CHECKED, CudaCheck
from ganglion.doctor.sysfs import PASSTHROUGH_DRIVERS, HostPaths, PciDevice, read_text
from ganglion.doctor.verdicts import Diagnosis, Recommendation, driver_number

MODULES = ("nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nouveau", "vfio_pci")
"""The kernel modules that tell who drives an NVIDIA GPU."""

State = Literal["working", "loaded", "broken", "wrong", "passthrough", "display", "none"]


@dataclass(frozen=True)
class LoadedDriver:
    """The NVIDIA-related kernel modules loaded, and the nvidia module's flavour and version."""

    modules: frozenset[str] = frozenset()
    flavour: Literal["open", "proprietary"] | None = None
    version: str | None = None

    @property
    def nvidia(self) -> bool:
        return "nvidia" in self.modules or self.version is not None

    @property
    def label(self) -> str:
        """``nvidia-open 580.159.04``, ``nvidia 580.95.05 (proprietary)``."""
        version = f" {self.version}" if self.version else ""
        if self.flavour == "open":
            return f"nvidia-open{version}"
        return f"nvidia{version}" + (" (proprietary)" if self.flavour else "")

    @property
    def branch(self) -> int | None:
        major = (self.version or "").split(".")[0]
        return int(major) if major.isdigit() else None


def parse_nvrm(text: str) -> tuple[Literal["open", "proprietary"] | None, str | None]:
    """``/proc/driver/nvidia/version`` -> (flavour, version)::

    NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ...
    NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 23 09:21:19 UTC 2025
    """
    line = next((li for li in text.splitlines() if li.startswith("NVRM version:")), "")
    flavour: Literal["open", "proprietary"] | None = None
    if "Open Kernel Module" in line:
        flavour = "open"
    elif "Kernel Module" in line:
        flavour = "proprietary"
    match = re.search(r"\s(\d+\.\d+(?:\.\d+)?)(?:\s|$)", line)
    return flavour, match.group(1) if match else None


def read_loaded(paths: HostPaths) -> LoadedDriver:
    """The modules under ``sysfs/module`` and the nvidia module's own words in procfs."""
    modules = frozenset(name for name in MODULES if (paths.sysfs / "module" / name).is_dir())
    flavour, version = parse_nvrm(read_text(paths.procfs / "driver" / "nvidia" / "version") or "")
    version = version or read_text(paths.sysfs / "module" / "nvidia" / "version")
    return LoadedDriver(modules, flavour, version)


def _plural(count: int) -> str:
    return f"{count} GPU{'s' if count != 1 else ''}"


@dataclass(frozen=True)
class Live:
    """The JSON ``live`` section: the driver the NVIDIA GPUs run on, and whether CUDA works."""

    driver: str | None
    loaded: LoadedDriver
    cuda: CudaCheck
    why: str

    def as_json(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "flavour": self.loaded.flavour,
            "version": self.loaded.version,
            "cuda_driver_version": self.cuda.cuda_version,
            "cuda_ok": self.cuda.ok,
            "why": self.why,
            "modules": sorted(self.loaded.modules),
            "checked_with": self.cuda.how,
            "library": self.cuda.library,
            "gpus_initialised": len(self.cuda.devices) if self.cuda.ok else 0,
            "devices": [asdict(device) for device in self.cuda.devices],
        }


def working_line(loaded: LoadedDriver, cuda: CudaCheck) -> str:
    """``working: nvidia-open 580.159.04, CUDA 13.0, 1 GPU initialised``."""
    label = loaded.label if loaded.nvidia else f"NVIDIA {cuda.library_version or 'driver'}"
    return f"working: {label}, CUDA {cuda.cuda_version}, {_plural(len(cuda.devices))} initialised"


def _driver(devices: Sequence[PciDevice], loaded: LoadedDriver) -> str | None:
    bound = Counter(d.driver for d in devices if d.driver)
    if bound:
        return bound.most_common(1)[0][0]
    if loaded.nvidia:
        return "nvidia"
    return "nouveau" if "nouveau" in loaded.modules else None


def summarise(devices: Sequence[PciDevice], loaded: LoadedDriver, cuda: CudaCheck) -> Live:
    """The host's live driver, from the NVIDIA GPUs' bindings (``devices``) and the modules."""
    driver = _driver(devices, loaded)
    failing = f"; {cuda.why}" if cuda.ok is False else ""
    if cuda.ok:
        why = working_line(loaded, cuda)
    elif loaded.nvidia:
        done = "CUDA not checked" if cuda.ok is None else f"but CUDA does not work: {cuda.why}"
        why = f"{loaded.label} is loaded, {done}"
    elif driver == "nouveau":
        why = f"nouveau drives the GPU: display only, never CUDA{failing}"
    elif driver in PASSTHROUGH_DRIVERS:
        why = f"{driver} holds the GPU for a VM: its driver runs in the guest{failing}"
    else:
        why = f"no NVIDIA kernel driver is loaded{failing}"
    return Live(driver, loaded, cuda, why)


@dataclass(frozen=True)
class InUse:
    """One GPU's live state: what holds it and whether that works; ``fix`` when it does not
    (``None``: the recommendation is the fix)."""

    state: State
    why: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "why": self.why, "fix": self.fix}


def cuda_fix(loaded: LoadedDriver, cuda: CudaCheck, model: GpuModel) -> str:
    """What to do when the driver holds the GPU but CUDA fails."""
    library = cuda.library_version
    if cuda.error == "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH" or (
        library and loaded.version and library != loaded.version
    ):
        return (
            f"libcuda {library or '(another version)'} does not match the kernel module "
            f"{loaded.version}: reboot after a driver upgrade, or reinstall so both match."
        )
    if cuda.error == "no libcuda":
        branch = loaded.branch or model.last_branch
        return (
            "Install the driver's CUDA library (libcuda.so.1) of the same version as the kernel "
            f"module: Debian libcuda1, Ubuntu libnvidia-compute-{branch}."
        )
    if "nvidia_uvm" not in loaded.modules:
        return "Load nvidia_uvm, which CUDA needs: `sudo modprobe nvidia-uvm` (and at boot)."
    return "Look for NVRM and Xid errors in `sudo dmesg`, and run `nvidia-smi`."


def _on_nvidia(model: GpuModel, loaded: LoadedDriver, cuda: CudaCheck, bdf: str | None) -> InUse:
    label = loaded.label
    if cuda.ok is None:
        return InUse("loaded", f"{label} drives it; CUDA not checked")
    if not cuda.ok:
        why = f"{label} drives it, but CUDA does not work: {cuda.why}"
        return InUse("broken", why, cuda_fix(loaded, cuda, model))
    if bdf and cuda.bus_ids and bdf not in cuda.bus_ids:
        why = f"{label} drives it, but CUDA initialised {_plural(len(cuda.devices))}, not this one"
        return InUse("broken", why, "Check CUDA_VISIBLE_DEVICES, and `nvidia-smi -L`.")
    return InUse("working", working_line(loaded, cuda))


def _wrong_module(model: GpuModel, loaded: LoadedDriver) -> InUse | None:
    """The loaded nvidia module cannot drive this card: wrong flavour, or a branch too new."""
    label, last = loaded.label, model.last_branch
    if loaded.flavour == "open" and model.open_modules == "no":
        why = f"{label} is loaded, and the open kernel modules cannot drive a pre-Turing GPU"
        fix = (
            f"Install the proprietary kernel modules of the {last} branch instead (NVIDIA's "
            f"installer: --kernel-module-type=proprietary; Ubuntu: nvidia-driver-{last}, not "
            "-open)."
        )
        return InUse("wrong", why, fix)
    if loaded.flavour == "proprietary" and model.open_modules == "required":
        why = f"{label} is loaded, but the {model.name} works only with the open kernel modules"
        fix = (
            "Install the open kernel modules of the same driver (NVIDIA's installer: "
            "--kernel-module-type=open; Ubuntu: the -open package)."
        )
        return InUse("wrong", why, fix)
    if loaded.branch is not None and loaded.branch > driver_number(model):
        why = f"{label} is loaded, a branch too new for the {model.name} (its last is {last})"
        return InUse("wrong", why)
    return None


def _not_nvidia(model: GpuModel, bound: str) -> InUse:
    """A card held by vfio-pci (for a VM) or by nouveau."""
    if bound in PASSTHROUGH_DRIVERS:
        return InUse("passthrough", f"bound to {bound}: this host hands it to a VM")
    if model.compute_capability is None:
        return InUse("display", "nouveau drives it, as it should: this GPU has no CUDA")
    return InUse("wrong", "nouveau drives it: display only, never CUDA, so models run on CPU")


def judge(
    model: GpuModel, device: PciDevice | None, loaded: LoadedDriver, cuda: CudaCheck = NOT_CHECKED
) -> InUse | None:
    """Whether what holds ``device`` now works for ``model``; ``None`` for a card given by id."""
    if device is None:
        return None
    bound = device.driver
    if bound is not None and (bound in PASSTHROUGH_DRIVERS or bound == "nouveau"):
        return _not_nvidia(model, bound)
    if not (loaded.nvidia or bound == "nvidia"):
        return InUse("none", f"{bound} holds it" if bound else "no driver holds it")
    wrong = _wrong_module(model, loaded)
    if wrong is not None:
        return wrong
    if bound == "nvidia":
        return _on_nvidia(model, loaded, cuda, device.bdf)
    why = f"{loaded.label} is loaded but does not hold this GPU"
    return InUse("wrong", why, "Look in `sudo dmesg | grep NVRM` for why it refused it.")


def _enlist(in_use: InUse, loaded: LoadedDriver) -> Recommendation:
    path = "proprietary" if loaded.flavour == "proprietary" else "open"
    if in_use.state == "working":
        first = f"{in_use.why[0].upper()}{in_use.why[1:]}. Nothing to install"
    else:
        first = f"{in_use.why} (`ganglion doctor --cuda-check` on this machine checks it)"
    return Recommendation(
        path,
        f"{first}; next, enlist it: serve Ollama here and `ganglion neuron add "
        "http://<this machine>:11434`, or on K3s `ganglion enlist k3s`.",
    )


def advise(
    base: Recommendation, d: Diagnosis, in_use: InUse | None, loaded: LoadedDriver
) -> Recommendation:
    """The recommendation once the live state is known: enlist what works, fix what does not."""
    if in_use is None or in_use.state in ("none", "display"):
        return base
    if in_use.state in ("working", "loaded"):
        return _enlist(in_use, loaded)
    if in_use.state == "passthrough" and base.path in ("open", "proprietary"):
        return Recommendation(base.path, f"{in_use.why}; in that VM: {base.text}")
    fix = in_use.fix or base.text
    if in_use.why.startswith("nouveau") and base.path in ("open", "proprietary"):
        fix += " The driver's packages blacklist nouveau; reboot after installing."
    elif in_use.state == "wrong" and in_use.fix is None and base.path == "vfio":
        fix = f"Go back to the {d.model.last_branch} driver and hold it there, or: {base.text}"
    return Recommendation(base.path, f"{in_use.why}. {fix}")
