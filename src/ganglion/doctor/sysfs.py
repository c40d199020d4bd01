"""Reading this machine: PCI devices and IOMMU groups from sysfs, the kernel, the distribution.

Every path is rooted in :class:`HostPaths`, so tests (and rescue systems) point the doctor at a
fixture tree instead of ``/sys`` and ``/proc``.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from ganglion.doctor import DoctorError
from ganglion.doctor.pciid import SYSTEM_PCI_IDS, PciId, parse_pci_id

CLASS_NAMES: dict[int, str] = {
    0x0100: "SCSI controller",
    0x0106: "SATA controller",
    0x0108: "NVMe controller",
    0x0200: "Ethernet controller",
    0x0280: "Network controller",
    0x0300: "VGA compatible controller",
    0x0302: "3D controller",
    0x0380: "Display controller",
    0x0401: "Multimedia audio controller",
    0x0403: "Audio device",
    0x0600: "Host bridge",
    0x0601: "ISA bridge",
    0x0604: "PCI bridge",
    0x0C03: "USB controller",
    0x0C05: "SMBus",
    0x0C80: "Serial bus controller",
}
"""PCI class (base and subclass) -> name, as ``lspci`` says it."""

PASSTHROUGH_DRIVERS = frozenset({"vfio-pci", "pci-stub"})


@dataclass(frozen=True)
class HostPaths:
    """Where the doctor reads the machine."""

    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")
    os_release: tuple[Path, ...] = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
    pci_ids: tuple[Path, ...] = SYSTEM_PCI_IDS


@dataclass(frozen=True)
class PciDevice:
    """One PCI function as sysfs shows it; ``class_code`` is the 24-bit class."""

    bdf: str
    pci_id: PciId
    class_code: int
    driver: str | None = None
    iommu_group: str | None = None

    @property
    def class_name(self) -> str:
        return CLASS_NAMES.get(self.class_code >> 8, f"class {self.class_code >> 8:04x}")

    @property
    def is_display(self) -> bool:
        return self.class_code >> 16 == 0x03

    @property
    def is_bridge(self) -> bool:
        return self.class_code >> 8 == 0x0604


@dataclass(frozen=True)
class HostInfo:
    """The facts about the host that verdicts need."""

    kernel: str | None
    distribution: str | None
    distribution_ids: tuple[str, ...] = ()
    iommu_enabled: bool = False
    iommu_groups: int = 0
    cpu_vendor: str | None = None
    cmdline: str | None = None
    nvidia_driver: str | None = None
    mem_total_mib: int | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def pci_devices_dir(sysfs: Path) -> Path:
    """``ROOT/bus/pci/devices``, or a :class:`DoctorError` that says what is wrong with ROOT."""
    if not sysfs.is_dir():
        raise DoctorError(f"cannot read sysfs at {sysfs}: not a directory")
    devices = sysfs / "bus" / "pci" / "devices"
    if not devices.is_dir():
        raise DoctorError(f"{sysfs} does not look like sysfs: it has no bus/pci/devices")
    if not os.access(devices, os.R_OK | os.X_OK):
        raise DoctorError(f"cannot read {devices}: permission denied")
    return devices


def _device(path: Path) -> PciDevice | None:
    vendor, device, klass = (_read(path / name) for name in ("vendor", "device", "class"))
    if vendor is None or device is None or klass is None:
        return None
    try:
        pci_id = parse_pci_id(f"{vendor.removeprefix('0x')}:{device.removeprefix('0x')}")
        class_code = int(klass, 16)
    except (DoctorError, ValueError):
        return None
    return PciDevice(
        path.name, pci_id, class_code, _link_name(path / "driver"), _link_name(path / "iommu_group")
    )


def scan(sysfs: Path) -> list[PciDevice]:
    """Every PCI function under ``sysfs``, in address order."""
    devices_dir = pci_devices_dir(sysfs)
    try:
        entries = sorted(devices_dir.iterdir())
    except OSError as error:
        raise DoctorError(f"cannot list {devices_dir}: {error.strerror}") from error
    found = (_device(entry) for entry in entries)
    return [device for device in found if device is not None]


def iommu_groups(sysfs: Path) -> dict[str, list[str]]:
    """IOMMU group number -> the addresses in it (empty when the IOMMU is off)."""
    root = sysfs / "kernel" / "iommu_groups"
    groups: dict[str, list[str]] = {}
    try:
        for group in root.iterdir():
            devices = group / "devices"
            groups[group.name] = (
                sorted(p.name for p in devices.iterdir()) if devices.is_dir() else []
            )
    except OSError:
        return {}
    return dict(sorted(groups.items(), key=lambda item: (len(item[0]), item[0])))


def kernel_release(procfs: Path) -> str | None:
    return _read(procfs / "sys" / "kernel" / "osrelease") or platform.release() or None


def parse_kernel(release: str | None) -> tuple[int, int] | None:
    """``6.12.9-amd64`` -> ``(6, 12)``."""
    match = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def os_release(paths: tuple[Path, ...]) -> dict[str, str]:
    for path in paths:
        text = _read(path)
        if text is not None:
            pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
            return {key.strip(): value.strip().strip("\"'") for key, value in pairs}
    return {}


def cpuinfo(procfs: Path) -> str:
    return _read(procfs / "cpuinfo") or ""


def cpu_vendor(procfs: Path) -> str | None:
    text = cpuinfo(procfs)
    vendors = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
    return next((name for key, name in vendors.items() if key in text), None)


def mem_total_mib(procfs: Path) -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", _read(procfs / "meminfo") or "", re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def read_host(paths: HostPaths, kernel: str | None = None) -> HostInfo:
    """The host's facts; ``kernel`` overrides the running kernel's release."""
    release = os_release(paths.os_release)
    groups = iommu_groups(paths.sysfs)
    ids = (release.get("ID", ""), *release.get("ID_LIKE", "").split())
    return HostInfo(
        kernel=kernel or kernel_release(paths.procfs),
        distribution=release.get("PRETTY_NAME") or release.get("NAME"),
        distribution_ids=tuple(i for i in ids if i),
        iommu_enabled=bool(groups),
        iommu_groups=len(groups),
        cpu_vendor=cpu_vendor(paths.procfs),
        cmdline=_read(paths.procfs / "cmdline"),
        nvidia_driver=_read(paths.sysfs / "module" / "nvidia" / "version"),
        mem_total_mib=mem_total_mib(paths.procfs),
    )
