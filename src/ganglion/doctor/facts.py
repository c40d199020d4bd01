"""Public facts the doctor judges by, as tables. Each table names its sources.

The per-device facts (which branch last supports a device, whether it takes the open modules)
are in the generated ``data/gpus.tsv``; these are the facts per architecture, per driver branch,
per CUDA major and per inference engine.
"""

from __future__ import annotations

from dataclasses import dataclass

ComputeCapability = tuple[int, int]

CURRENT = 9999
"""The number that stands for the ``current`` branch when comparing with driver versions."""


def parse_cc(text: str) -> ComputeCapability:
    """``"5.2"`` -> ``(5, 2)``."""
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


@dataclass(frozen=True)
class Architecture:
    """One GPU architecture; ``open_modules`` is ``no``, ``yes`` or ``required``."""

    name: str
    title: str
    last_branch: str
    open_modules: str
    nvk: bool


# Last proprietary branch: NVIDIA's supported-gpus.json ``legacybranch`` and the 590 README
# ("The release 580 series will be the last to support GPUs based on the Maxwell, Pascal, and
# Volta architectures"). Open modules: Turing and newer since 515, default since 560, the only
# ones for Blackwell (NVIDIA driver README, "Open Linux Kernel Modules"). NVK (Mesa's Vulkan on
# nouveau): Kepler to Ada and consumer Blackwell, Linux 6.6+ (Mesa NVK documentation).
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("fahrenheit", "Fahrenheit", "71", "no", nvk=False),
        Architecture("celsius", "Celsius", "96", "no", nvk=False),
        Architecture("kelvin", "Kelvin", "96", "no", nvk=False),
        Architecture("rankine", "Rankine", "173", "no", nvk=False),
        Architecture("curie", "Curie", "304", "no", nvk=False),
        Architecture("tesla", "Tesla", "340", "no", nvk=False),
        Architecture("fermi", "Fermi", "390", "no", nvk=False),
        Architecture("kepler", "Kepler", "470", "no", nvk=True),
        Architecture("maxwell", "Maxwell", "580", "no", nvk=True),
        Architecture("pascal", "Pascal", "580", "no", nvk=True),
        Architecture("volta", "Volta", "580", "no", nvk=True),
        Architecture("turing", "Turing", "current", "yes", nvk=True),
        Architecture("ampere", "Ampere", "current", "yes", nvk=True),
        Architecture("ada", "Ada", "current", "yes", nvk=True),
        Architecture("hopper", "Hopper", "current", "yes", nvk=False),
        Architecture("blackwell", "Blackwell", "current", "required", nvk=True),
    )
}


@dataclass(frozen=True)
class Branch:
    """A proprietary driver branch.

    ``builds_up_to`` is the newest kernel series it is known to build on without community
    patches (``None``: no known limit while ``maintained``, unknown otherwise). ``guest_os`` is a
    distribution whose kernel it builds on, for a VM.
    """

    name: str
    number: int
    maintained: bool
    builds_up_to: tuple[int, int] | None
    guest_os: str


# Kernel limits: 470 does not build on 6.12 and 390 not on 6.x without community patches
# (shared/data/nvidia/README.md); the final 340 release is compatible with Linux 5.4
# (phoronix.com, "NVIDIA Retiring Their Pre-Fermi 340 Series Legacy Linux Graphics Driver").
# Guest systems: Debian 10, 11 and 12 ship Linux 4.19, 5.10 and 6.1.
BRANCHES: dict[str, Branch] = {
    branch.name: branch
    for branch in (
        Branch("71", 71, maintained=False, builds_up_to=None, guest_os="none current"),
        Branch("96", 96, maintained=False, builds_up_to=None, guest_os="none current"),
        Branch("173", 173, maintained=False, builds_up_to=None, guest_os="none current"),
        Branch("304", 304, maintained=False, builds_up_to=None, guest_os="none current"),
        Branch(
            "340", 340, maintained=False, builds_up_to=(5, 4), guest_os="Debian 10 (Linux 4.19)"
        ),
        Branch("367", 367, maintained=False, builds_up_to=None, guest_os="none current"),
        Branch(
            "390", 390, maintained=False, builds_up_to=(5, 19), guest_os="Debian 11 (Linux 5.10)"
        ),
        Branch(
            "470", 470, maintained=False, builds_up_to=(6, 11), guest_os="Debian 12 (Linux 6.1)"
        ),
        Branch("580", 580, maintained=True, builds_up_to=None, guest_os="Debian 12 or 13"),
        Branch("current", CURRENT, maintained=True, builds_up_to=None, guest_os="Debian 13"),
    )
}


@dataclass(frozen=True)
class CudaMajor:
    """The oldest compute capability and driver branch a CUDA major runs with."""

    major: int
    min_cc: ComputeCapability
    min_driver: int


# CUDA 13.x >= 7.5 / 580.65.06; 12.x >= 5.0 / 525.60.13; 11.x >= 3.5 / 450.80.02
# (shared/data/nvidia/README.md). Older majors: the CUDA Toolkit release notes' driver table
# (10.0 >= 410.48, 9.0 >= 384.81, 8.0 >= 367.48, 7.0 >= 346.46, 6.5 >= 340) and NVIDIA's
# "CUDA and architecture matrix" (docs.nvidia.com/datacenter/tesla/drivers: Fermi's last
# toolkit is 8.0, Kepler 3.0/3.2's is 10.2, Kepler 3.5/3.7's is 11.x; 6.5 is the last for 1.x).
CUDA_MAJORS: tuple[CudaMajor, ...] = (
    CudaMajor(13, (7, 5), 580),
    CudaMajor(12, (5, 0), 525),
    CudaMajor(11, (3, 5), 450),
    CudaMajor(10, (3, 0), 410),
    CudaMajor(9, (3, 0), 384),
    CudaMajor(8, (2, 0), 367),
    CudaMajor(7, (2, 0), 346),
    CudaMajor(6, (1, 0), 331),
)


@dataclass(frozen=True)
class Engine:
    """An inference engine's CUDA floor: ``driver_floors`` maps a compute capability floor to
    the oldest driver branch it needs there (first match wins)."""

    key: str
    title: str
    min_cc: ComputeCapability
    driver_floors: tuple[tuple[ComputeCapability, int], ...] = (((0, 0), 0),)


# shared/data/nvidia/README.md: Ollama CUDA needs CC >= 5.0 and driver >= 550 (CC 5.0-6.2:
# >= 570); llama.cpp's CUDA builds >= 5.0 (its CUDA 13 builds >= 7.5); vLLM (current) >= 7.5
# (older releases ran on 7.0); TensorRT-LLM >= 8.0.
ENGINES: tuple[Engine, ...] = (
    Engine("ollama", "Ollama", (5, 0), (((6, 3), 550), ((5, 0), 570))),
    Engine("llama_cpp", "llama.cpp", (5, 0)),
    Engine("vllm", "vLLM", (7, 5)),
    Engine("tensorrt_llm", "TensorRT-LLM", (8, 0)),
)


@dataclass(frozen=True)
class WheelLine:
    """A PyTorch wheel line (``cu126``) and the GPUs and CUDA major it needs."""

    name: str
    min_cc: ComputeCapability
    cuda_major: int


# shared/data/nvidia/README.md: cu126 >= 5.0, cu128 (PyTorch 2.8+) >= 7.0, cu130 >= 7.5.
PYTORCH_LINES: tuple[WheelLine, ...] = (
    WheelLine("cu130", (7, 5), 13),
    WheelLine("cu128", (7, 0), 12),
    WheelLine("cu126", (5, 0), 12),
)
