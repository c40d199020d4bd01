"""Reading this machine: PCI devices and IOMMU groups from sysfs, the kernel, the distribution,
and whether it is itself a VM guest.

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
    guest: Guest | None = None
    """Set when this machine is a VM guest."""


@dataclass(frozen=True)
class Guest:
    """This machine is a VM guest: ``hypervisor`` by name where DMI tells it, and the
    ``evidence`` (the ``hypervisor`` CPU flag, DMI strings, ``/sys/hypervisor/type``)."""

    hypervisor: str | None
    evidence: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.hypervisor or "an unknown hypervisor"


DMI_FIELDS = ("sys_vendor", "product_name", "board_vendor", "bios_vendor", "chassis_vendor")
"""``/sys/class/dmi/id`` files that name the (virtual) machine."""

HYPERVISORS: tuple[tuple[str, str], ...] = (
    ("qemu", "QEMU"),
    ("kvm", "KVM"),
    ("vmware", "VMware"),
    ("virtualbox", "VirtualBox"),
    ("innotek", "VirtualBox"),
    ("virtual machine", "Hyper-V"),
    ("xen", "Xen"),
    ("bochs", "Bochs"),
    ("bhyve", "bhyve"),
    ("parallels", "Parallels"),
    ("cloud hypervisor", "Cloud Hypervisor"),
    ("openstack", "OpenStack"),
    ("ovirt", "oVirt"),
    ("nutanix", "Nutanix AHV"),
)
"""A word in the DMI strings -> the hypervisor. Each names virtual hardware only, so DMI alone
is proof (passthrough setups hide the ``hypervisor`` flag from the guest to please old NVIDIA
drivers). Clouds that also sell bare metal (``Amazon EC2``) are named by the flag, not here."""

CLOUDS: tuple[tuple[str, str], ...] = (
    ("amazon ec2", "Amazon EC2"),
    ("google compute engine", "Google Compute Engine"),
    ("alibaba cloud", "Alibaba Cloud ECS"),
    ("oraclecloud", "Oracle Cloud"),
)
"""DMI words that name a cloud's machine: a guest's hypervisor when the flag says guest."""


def read_text(path: Path) -> str | None:
    """The text of ``path`` stripped, or ``None`` when it cannot be read."""
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
    vendor, device, klass = (read_text(path / name) for name in ("vendor", "device", "class"))
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
    return read_text(procfs / "sys" / "kernel" / "osrelease") or platform.release() or None


def parse_kernel(release: str | None) -> tuple[int, int] | None:
    """``6.12.9-amd64`` -> ``(6, 12)``."""
    match = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def os_release(paths: tuple[Path, ...]) -> dict[str, str]:
    for path in paths:
        text = read_text(path)
        if text is not None:
            pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
            return {key.strip(): value.strip().strip("\"'") for key, value in pairs}
    return {}


def cpuinfo(procfs: Path) -> str:
    return read_text(procfs / "cpuinfo") or ""


def cpu_vendor(procfs: Path) -> str | None:
    text = cpuinfo(procfs)
    vendors = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
    return next((name for key, name in vendors.items() if key in text), None)


def _dmi(sysfs: Path) -> dict[str, str]:
    found = ((name, read_text(sysfs / "class" / "dmi" / "id" / name)) for name in DMI_FIELDS)
    return {name: value for name, value in found if value}


def _named(dmi: dict[str, str], table: tuple[tuple[str, str], ...]) -> tuple[str, str] | None:
    for field, value in dmi.items():
        for word, name in table:
            if re.search(rf"\b{word}\b", value.lower()):
                return name, f"DMI {field}: {value}"
    return None


def virtualization(sysfs: Path, procfs: Path) -> Guest | None:
    """Whether this machine is a VM guest, from the ``hypervisor`` CPU flag, DMI and
    ``/sys/hypervisor/type``; ``None`` for bare metal."""
    if "control_d" in (read_text(procfs / "xen" / "capabilities") or ""):
        return None  # Xen's dom0 manages the guests: for passthrough it is the host
    flag = re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo(procfs), re.MULTILINE) is not None
    dmi = _dmi(sysfs)
    product = _named(dmi, HYPERVISORS)
    cloud = _named(dmi, CLOUDS) if flag else None
    xen = read_text(sysfs / "hypervisor" / "type")
    evidence = [
        *(["CPU flag: hypervisor"] if flag else []),
        *(found[1] for found in (product, cloud) if found),
        *([f"/sys/hypervisor/type: {xen}"] if xen else []),
    ]
    if not evidence:
        return None
    named = product or cloud
    return Guest(named[0] if named else (xen.capitalize() if xen else None), tuple(evidence))


def mem_total_mib(procfs: Path) -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", read_text(procfs / "meminfo") or "", re.MULTILINE)
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
        cmdline=read_text(paths.procfs / "cmdline"),
        nvidia_driver=read_text(paths.sysfs / "module" / "nvidia" / "version"),
        mem_total_mib=mem_total_mib(paths.procfs),
        guest=virtualization(paths.sysfs, paths.procfs),
    )
