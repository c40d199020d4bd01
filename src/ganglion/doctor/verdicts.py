"""One small rule per driver path, the CUDA and engines a GPU can run, and what to do.

Each rule reads the facts tables; none knows an architecture by name except through them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ganglion.doctor.catalog import GpuModel
from ganglion.doctor.facts import (
    ARCHITECTURES,
    BRANCHES,
    CUDA_MAJORS,
    CURRENT,
    ENGINES,
    PYTORCH_LINES,
    Branch,
    ComputeCapability,
    Engine,
    parse_cc,
)
from ganglion.doctor.iommu import GroupCheck
from ganglion.doctor.sysfs import Guest, HostInfo, parse_kernel


@dataclass(frozen=True)
class Nouveau:
    works: bool
    cuda: bool
    why: str


@dataclass(frozen=True)
class NvidiaOpen:
    works: bool
    required: bool
    why: str


@dataclass(frozen=True)
class NvidiaProprietary:
    works: bool
    last_branch: str
    builds_on_kernel: bool | None
    why: str


@dataclass(frozen=True)
class VfioPassthrough:
    works: bool | None
    why: str


@dataclass(frozen=True)
class Engines:
    ollama: bool
    llama_cpp: bool
    vllm: bool
    tensorrt_llm: bool
    pytorch: str | None

    def names(self) -> list[str]:
        return [engine.title for engine in ENGINES if getattr(self, engine.key)]


@dataclass(frozen=True)
class Recommendation:
    """``path`` is ``open``, ``proprietary``, ``vfio`` or ``none``."""

    path: str
    text: str


def _title(model: GpuModel) -> str:
    return ARCHITECTURES[model.arch].title if model.arch else "unknown"


def _cc(model: GpuModel) -> ComputeCapability | None:
    return parse_cc(model.compute_capability) if model.compute_capability else None


def branch_of(model: GpuModel) -> Branch:
    fallback = Branch(model.last_branch, 0, maintained=False, builds_up_to=None, guest_os="")
    return BRANCHES.get(model.last_branch, fallback)


def nouveau(model: GpuModel) -> Nouveau:
    nvk = model.arch is not None and ARCHITECTURES[model.arch].nvk
    extra = " and Vulkan through NVK (Linux 6.6+)" if nvk else ""
    return Nouveau(True, False, f"display{extra}; never CUDA")


def nvidia_open(model: GpuModel) -> NvidiaOpen:
    if model.open_modules == "required":
        why = f"required: {model.name} is supported only by the open kernel modules"
        return NvidiaOpen(True, True, why)
    if model.open_modules == "yes":
        return NvidiaOpen(True, False, "supported (Turing and newer); the default since 560")
    why = f"no: the open modules need Turing or newer, this is {_title(model)}"
    return NvidiaOpen(False, False, why)


def builds_on(branch: Branch, kernel: str | None) -> bool | None:
    """Whether ``branch`` is known to build on ``kernel`` without community patches."""
    version = parse_kernel(kernel)
    if branch.builds_up_to is None:
        return True if branch.maintained else None
    return None if version is None else version <= branch.builds_up_to


def nvidia_proprietary(model: GpuModel, kernel: str | None) -> NvidiaProprietary:
    branch = branch_of(model)
    last = model.last_branch
    if model.open_modules == "required":
        why = f"no: {model.name} is supported only by the open kernel modules"
        return NvidiaProprietary(False, last, None, why)
    builds = builds_on(branch, kernel)
    if builds is None:
        why = f"no: last branch {last} is unmaintained and not known to build on current kernels"
        return NvidiaProprietary(False, last, None, why)
    if not builds:
        limit = ".".join(map(str, branch.builds_up_to or ()))
        why = f"no: last branch {last} builds only up to Linux {limit} unpatched; this is {kernel}"
        return NvidiaProprietary(False, last, False, why)
    if last == "current":
        return NvidiaProprietary(True, last, True, "yes: the current branch supports it")
    kernel_part = f", known to build on Linux {kernel}" if kernel else ""
    why = f"yes: last branch {last}{kernel_part}; newer branches drop this GPU"
    return NvidiaProprietary(True, last, True, why)


def guest_line(guest: Guest) -> str:
    """``this machine is a VM guest (QEMU); the GPU was passed through to it``."""
    return f"this machine is a VM guest ({guest.name}); the GPU was passed through to it"


def vfio_passthrough(host: HostInfo, group: GroupCheck | None) -> VfioPassthrough:
    if host.guest is not None and not host.iommu_enabled:
        why = (
            f"{guest_line(host.guest)}: passthrough is the host's business (run "
            "`ganglion doctor vfio` on the host)"
        )
        return VfioPassthrough(False, why)
    if not host.iommu_enabled:
        return VfioPassthrough(False, "the IOMMU is off: enable VT-d/AMD-Vi and intel_iommu=on")
    if group is None:
        return VfioPassthrough(
            None, "IOMMU on; the card's group can be judged once it is installed"
        )
    return VfioPassthrough(group.clean, f"IOMMU on; {group.why}")


def driver_number(model: GpuModel) -> int:
    return CURRENT if model.last_branch == "current" else branch_of(model).number


def cuda_max_major(model: GpuModel) -> int:
    """The newest CUDA major the GPU runs with its last driver branch; 0 when none."""
    cc, driver = _cc(model), driver_number(model)
    if cc is None:
        return 0
    fits = (m.major for m in CUDA_MAJORS if cc >= m.min_cc and driver >= m.min_driver)
    return max(fits, default=0)


def _engine_runs(engine: Engine, cc: ComputeCapability, driver: int) -> bool:
    floor = next((d for floor_cc, d in engine.driver_floors if cc >= floor_cc), None)
    return cc >= engine.min_cc and floor is not None and driver >= floor


def engines(model: GpuModel) -> Engines:
    cc, driver, cuda = _cc(model), driver_number(model), cuda_max_major(model)
    if cc is None:
        return Engines(False, False, False, False, None)
    runs = {engine.key: _engine_runs(engine, cc, driver) for engine in ENGINES}
    wheel = next((w.name for w in PYTORCH_LINES if cc >= w.min_cc and cuda >= w.cuda_major), None)
    return Engines(pytorch=wheel, **runs)


@dataclass(frozen=True)
class Diagnosis:
    """Everything the recommendation rules read about one GPU."""

    model: GpuModel
    bdf: str | None
    open: NvidiaOpen
    proprietary: NvidiaProprietary
    vfio: VfioPassthrough
    cuda_major: int
    engines: Engines
    conflict: str | None
    guest: Guest | None = None


def _engine_list(d: Diagnosis) -> str:
    names = d.engines.names()
    wheel = f" (PyTorch {d.engines.pytorch})" if d.engines.pytorch else ""
    return (", ".join(names) or "no LLM engine") + wheel


def _no_cuda(d: Diagnosis) -> Recommendation | None:
    if d.cuda_major:
        return None
    what = "an unknown GPU" if d.model.arch is None else f"a {_title(d.model)} GPU"
    text = (
        f"No CUDA: this is {what}. Use nouveau for display and serve models from this "
        "node's CPU or from another node."
    )
    return Recommendation("none", text)


def _no_engine(d: Diagnosis) -> Recommendation | None:
    if d.engines.names() or d.engines.pytorch:
        return None
    text = (
        f"CUDA {d.cuda_major} at most (branch {d.model.last_branch}), which no current LLM "
        "engine supports (they need compute capability 5.0 or newer). Keep it for display "
        "with nouveau; serve models from the CPU or another node."
    )
    return Recommendation("none", text)


def _vm(d: Diagnosis) -> Recommendation | None:
    reason = d.conflict or (None if d.proprietary.works or d.open.works else d.proprietary.why)
    if reason is None:
        return None
    if d.guest is not None:
        return _in_guest(d, d.guest, reason)
    where = f" --pci {d.bdf}" if d.bdf else ""
    fix = "" if d.vfio.works is not False else f" First: {d.vfio.why}."
    text = (
        f"Pass it through to a VM (VFIO) that runs the {d.model.last_branch} driver with CUDA "
        f"{d.cuda_major}, join the VM to K3s and serve {_engine_list(d)} there, because "
        f"{reason.removeprefix('no: ')}.{fix} `ganglion doctor vfio{where}` writes the plan."
    )
    return Recommendation("vfio", text)


def _in_guest(d: Diagnosis, guest: Guest, reason: str) -> Recommendation:
    """A card this machine cannot drive, in a VM guest: the fix is this VM's system, or
    another VM, which only the host can give it."""
    line = guest_line(guest)
    text = (
        f"{line[0].upper()}{line[1:]}, so its driver belongs here, but "
        f"{reason.removeprefix('no: ')}. Give this VM a system the {d.model.last_branch} "
        f"driver builds on ({branch_of(d.model).guest_os}) and install it there with CUDA "
        f"{d.cuda_major}, or have the host pass the card to another VM (`ganglion doctor vfio` "
        "on the host)."
    )
    return Recommendation("vfio", text)


def _open(d: Diagnosis) -> Recommendation | None:
    if not d.open.works:
        return None
    need = " (required for this GPU)" if d.open.required else ""
    text = (
        f"Install the current NVIDIA driver with the open kernel modules{need} and CUDA "
        f"{d.cuda_major}; run {_engine_list(d)}; then `ganglion enlist k3s`."
    )
    return Recommendation("open", text)


def _proprietary(d: Diagnosis) -> Recommendation | None:
    if not d.proprietary.works:
        return None
    last = d.model.last_branch
    text = (
        f"Install the NVIDIA {last} driver (proprietary kernel modules, the last branch for "
        f"{_title(d.model)}) and CUDA {d.cuda_major}; run {_engine_list(d)}. Hold the driver at "
        f"{last}: if this host must move to a newer one, pass the GPU through to a VM instead "
        "(`ganglion doctor vfio`)."
    )
    return Recommendation("proprietary", text)


RULES: tuple[Callable[[Diagnosis], Recommendation | None], ...] = (
    _no_cuda,
    _no_engine,
    _vm,
    _open,
    _proprietary,
)
"""The recommendation rules, first answer wins."""


def recommend(d: Diagnosis) -> Recommendation:
    for rule in RULES:
        found = rule(d)
        if found is not None:
            return found
    return Recommendation("none", "No driver path works for this GPU on this host.")
