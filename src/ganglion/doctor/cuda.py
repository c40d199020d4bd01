"""The CUDA check: does CUDA really initialise here, and which GPUs does it see.

Through libcuda with ctypes (``cuInit``, ``cuDriverGetVersion``, ``cuDeviceGetCount``) in a
child process (:mod:`ganglion.doctor.cuda_child`), or, where no libcuda loads, through
``nvidia-smi -q``. Each runs under a timeout that kills its whole process group, so a hung
driver cannot hang the doctor. Nothing beyond the standard library.

``nvidia-smi`` speaks to the kernel driver through NVML, not CUDA: when it sees the GPUs but
no libcuda loads, CUDA programs (Ollama among them) cannot use them, and the check says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganglion.llamacpp import exit_reason

CUDA_TIMEOUT_S = 20.0
"""How long the check may take: ``cuInit`` on a large GPU without persistence mode takes
seconds; one that takes this long is stuck."""
REAP_S = 2.0
"""After the kill, how long to wait for the process to go (one stuck in the kernel never does)."""
LIBCUDA_NAMES = ("libcuda.so.1", "libcuda.so")
CHILD = Path(__file__).with_name("cuda_child.py")


@dataclass(frozen=True)
class CudaDevice:
    """One GPU CUDA (or nvidia-smi) sees; ``bus_id`` as sysfs writes it (``0000:00:06.0``)."""

    name: str | None
    bus_id: str | None
    memory_mib: int | None = None
    compute_capability: str | None = None
    bandwidth_gbps: float | None = None


@dataclass(frozen=True)
class CudaCheck:
    """The answer: ``ok`` is ``None`` when nothing was checked. ``how`` is ``libcuda`` or
    ``nvidia-smi``; ``driver_version`` is CUDA's (``13000`` for 13.0); ``library`` the file
    the loader mapped (``/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04``); ``error`` the
    CUDA error name when ``cuInit`` failed."""

    ok: bool | None
    why: str
    how: str | None = None
    driver_version: int | None = None
    devices: tuple[CudaDevice, ...] = ()
    library: str | None = None
    error: str | None = None

    @property
    def cuda_version(self) -> str | None:
        """``13000`` -> ``"13.0"``."""
        return cuda_version(self.driver_version)

    @property
    def library_version(self) -> str | None:
        """The user-space driver's version, from the library's file name."""
        match = re.search(r"\.so\.(\d+\.\d+(?:\.\d+)?)$", self.library or "")
        return match.group(1) if match else None

    @property
    def bus_ids(self) -> frozenset[str]:
        return frozenset(d.bus_id for d in self.devices if d.bus_id)


def cuda_version(number: int | None) -> str | None:
    """CUDA's version number (``13000``) as people write it (``13.0``)."""
    return None if number is None else f"{number // 1000}.{number % 1000 // 10}"


NOT_CHECKED = CudaCheck(None, "CUDA not checked")

CudaProbe = Callable[[], CudaCheck]
"""What the doctor calls to check CUDA: :func:`check_cuda`, or a fake in tests."""


@dataclass(frozen=True)
class Ran:
    """A bounded run: ``returncode`` is ``None`` when it was killed at the timeout."""

    returncode: int | None
    stdout: str
    stderr: str


def run_bounded(command: Sequence[str], timeout_s: float) -> Ran:
    """Run ``command`` in a session of its own; at ``timeout_s`` kill the whole session (a
    shell script's children too) and give up on it after :data:`REAP_S`."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=REAP_S)
        return Ran(None, "", "")
    return Ran(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def bus_id(text: str) -> str:
    """``00000000:00:06.0`` (nvidia-smi) or ``0000:00:06.0`` (CUDA) -> ``0000:00:06.0``."""
    domain, _, rest = text.strip().lower().rpartition(":")
    domain, _, bus = domain.rpartition(":")
    return f"{int(domain or '0', 16):04x}:{bus}:{rest}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _plural(count: int) -> str:
    return f"{count} GPU{'s' if count != 1 else ''}"


def _device(raw: dict[str, Any]) -> CudaDevice:
    return CudaDevice(
        name=raw.get("name"),
        bus_id=bus_id(raw["bus_id"]) if raw.get("bus_id") else None,
        memory_mib=raw.get("memory_mib"),
        compute_capability=raw.get("compute_capability"),
        bandwidth_gbps=raw.get("bandwidth_gbps"),
    )


def _from_child(answer: dict[str, Any]) -> CudaCheck:
    library = answer.get("file") or answer.get("library")
    if answer.get("init"):
        error = answer.get("init_error") or f"CUDA error {answer['init']}"
        why = f"cuInit failed with {error} ({answer['init']})"
        return CudaCheck(False, why, "libcuda", library=library, error=error)
    devices = tuple(_device(raw) for raw in answer.get("devices", []))
    version = answer.get("driver_version")
    if not devices:
        why = "CUDA initialised but sees no GPU" + (
            f": {answer['count_error']}" if answer.get("count_error") else ""
        )
        return CudaCheck(False, why, "libcuda", version, library=library)
    why = f"CUDA {cuda_version(version)}, {_plural(len(devices))} initialised"
    return CudaCheck(True, why, "libcuda", version, devices, library)


def _libcuda(names: Sequence[str], timeout_s: float, python: str) -> CudaCheck | None:
    """The check through libcuda; ``None`` when no library of ``names`` loads."""
    ran = run_bounded([python, "-I", str(CHILD), *names], timeout_s)
    if ran.returncode is None:
        why = (
            f"libcuda did not answer within {timeout_s:g} s: cuInit hangs, so the driver is "
            "stuck. Look for NVRM or Xid errors in `sudo dmesg`; a reboot clears it"
        )
        return CudaCheck(False, why, "libcuda", error="timeout")
    if ran.returncode != 0:
        said = ": ".join(filter(None, [exit_reason(ran.returncode), _last_line(ran.stderr)]))
        return CudaCheck(False, f"loading libcuda killed the check ({said})", "libcuda")
    try:
        answer: dict[str, Any] = json.loads(_last_line(ran.stdout))
    except ValueError:
        return CudaCheck(False, f"the libcuda check said {_last_line(ran.stdout)!r}", "libcuda")
    return None if answer.get("library") is None else _from_child(answer)


def _smi_sections(text: str) -> list[tuple[str, str]]:
    """``nvidia-smi -q`` -> (address, the lines under it) per GPU."""
    header = re.compile(r"^GPU ([0-9A-Fa-f]+:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$", re.M)
    starts = list(header.finditer(text))
    ends = [m.start() for m in starts[1:]] + [len(text)]  # one too many when there is none
    return [(m.group(1), text[m.end() : end]) for m, end in zip(starts, ends, strict=False)]


def _smi_field(text: str, name: str) -> str | None:
    match = re.search(rf"^\s*{re.escape(name)}\s*:\s*(.+?)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def parse_nvidia_smi(text: str) -> tuple[str | None, str | None, tuple[CudaDevice, ...]]:
    """``nvidia-smi -q`` -> (driver version, CUDA version, the GPUs)."""
    devices = []
    for address, section in _smi_sections(text):
        total = re.search(r"FB Memory Usage\s*\n\s*Total\s*:\s*(\d+)\s*MiB", section)
        memory = int(total.group(1)) if total else None
        devices.append(CudaDevice(_smi_field(section, "Product Name"), bus_id(address), memory))
    return _smi_field(text, "Driver Version"), _smi_field(text, "CUDA Version"), tuple(devices)


def _cuda_number(text: str | None) -> int | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", text or "")
    return int(match.group(1)) * 1000 + int(match.group(2)) * 10 if match else None


def _nvidia_smi(tool: str, timeout_s: float, missing: str) -> CudaCheck:
    ran = run_bounded([tool, "-q"], timeout_s)
    if ran.returncode is None:
        why = f"{missing}, and nvidia-smi did not answer within {timeout_s:g} s: the driver hangs"
        return CudaCheck(False, why, "nvidia-smi", error="timeout")
    if ran.returncode != 0:
        said = _last_line(ran.stdout + "\n" + ran.stderr) or exit_reason(ran.returncode)
        return CudaCheck(False, f"{missing}, and nvidia-smi failed: {said}", "nvidia-smi")
    driver, cuda, devices = parse_nvidia_smi(ran.stdout)
    seen = f"nvidia-smi sees {_plural(len(devices))} (driver {driver}, CUDA {cuda})"
    why = f"{seen}, but {missing}: CUDA programs such as Ollama cannot use them"
    return CudaCheck(False, why, "nvidia-smi", _cuda_number(cuda), devices, error="no libcuda")


def check_cuda(
    libcuda: Sequence[str] = LIBCUDA_NAMES,
    nvidia_smi: str = "nvidia-smi",
    timeout_s: float = CUDA_TIMEOUT_S,
    python: str = sys.executable,
) -> CudaCheck:
    """Check that CUDA initialises: through the first of ``libcuda`` (names for the loader, or
    paths) that loads, else report what ``nvidia_smi`` (looked up on PATH) sees."""
    found = _libcuda(libcuda, timeout_s, python)
    if found is not None:
        return found
    missing = f"no libcuda ({', '.join(libcuda)} not found by the loader)"
    tool = shutil.which(nvidia_smi)
    if tool is None:
        why = (
            f"{missing} and no nvidia-smi on PATH: the NVIDIA driver's user-space part is "
            "not installed"
        )
        return CudaCheck(False, why, error="no libcuda")
    return _nvidia_smi(tool, timeout_s, missing)
