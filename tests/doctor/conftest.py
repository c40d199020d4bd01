"""A builder of fake hosts for the doctor: a sysfs and procfs tree in ``tmp_path``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ganglion.cli import _register_all, app
from ganglion.cli.doctor import doctor_app
from ganglion.doctor.sysfs import HostPaths

VGA = 0x030000
THREE_D = 0x030200
AUDIO = 0x040300
BRIDGE = 0x060400
USB = 0x0C0330


class FakeHost:
    """A machine for the doctor to read: PCI functions, IOMMU groups, kernel, distribution."""

    def __init__(self, root: Path, *, iommu: bool = True, kernel: str = "6.12.9-amd64") -> None:
        self.root = root
        self.sys = root / "sys"
        self.proc = root / "proc"
        self.iommu = iommu
        (self.sys / "bus" / "pci" / "devices").mkdir(parents=True)
        (self.sys / "bus" / "pci" / "drivers").mkdir(parents=True)
        if iommu:
            (self.sys / "kernel" / "iommu_groups").mkdir(parents=True)
        (self.proc / "sys" / "kernel").mkdir(parents=True)
        (self.proc / "sys" / "kernel" / "osrelease").write_text(f"{kernel}\n")
        (self.proc / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n")
        (self.proc / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet\n")
        (self.proc / "meminfo").write_text("MemTotal:       65536000 kB\n")
        (root / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\n')

    @property
    def paths(self) -> HostPaths:
        return HostPaths(
            sysfs=self.sys,
            procfs=self.proc,
            os_release=(self.root / "os-release",),
            pci_ids=(self.root / "pci.ids",),
        )

    @property
    def args(self) -> list[str]:
        return [
            "--sysfs",
            str(self.sys),
            "--proc",
            str(self.proc),
            "--pci-ids",
            str(self.root / "pci.ids"),
        ]

    def device(
        self,
        bdf: str,
        pci_id: str,
        klass: int,
        *,
        driver: str | None = None,
        group: str | None = None,
    ) -> None:
        vendor, device = pci_id.split(":")
        path = self.sys / "bus" / "pci" / "devices" / bdf
        path.mkdir()
        (path / "vendor").write_text(f"0x{vendor}\n")
        (path / "device").write_text(f"0x{device}\n")
        (path / "class").write_text(f"0x{klass:06x}\n")
        if driver:
            target = self.sys / "bus" / "pci" / "drivers" / driver
            target.mkdir(exist_ok=True)
            os.symlink(target, path / "driver")
        if group is not None and self.iommu:
            group_dir = self.sys / "kernel" / "iommu_groups" / group
            (group_dir / "devices").mkdir(parents=True, exist_ok=True)
            os.symlink(path, group_dir / "devices" / bdf)
            os.symlink(group_dir, path / "iommu_group")

    def gpu(
        self,
        slot: str = "0000:01:00",
        device: str = "13f1",
        *,
        audio: str | None = "0fbb",
        driver: str | None = None,
        group: str | None = "1",
        klass: int = VGA,
    ) -> None:
        """An NVIDIA card: the GPU at ``slot.0`` and its HDMI audio at ``slot.1``."""
        self.device(f"{slot}.0", f"10de:{device}", klass, driver=driver, group=group)
        if audio:
            audio_driver = "vfio-pci" if driver == "vfio-pci" else "snd_hda_intel"
            self.device(f"{slot}.1", f"10de:{audio}", AUDIO, driver=audio_driver, group=group)

    def bridge(self, bdf: str = "0000:00:01.0", group: str = "1") -> None:
        self.device(bdf, "8086:1901", BRIDGE, driver="pcieport", group=group)

    def usb(self, bdf: str = "0000:00:14.0", group: str = "2") -> None:
        self.device(bdf, "8086:a36d", USB, driver="xhci_hcd", group=group)

    def nvidia_driver(self, version: str) -> None:
        module = self.sys / "module" / "nvidia"
        module.mkdir(parents=True)
        (module / "version").write_text(f"{version}\n")

    def module(self, name: str) -> None:
        (self.sys / "module" / name).mkdir(parents=True, exist_ok=True)

    def nvidia_loaded(self, nvrm: str, version: str) -> None:
        """The nvidia module and nvidia_uvm loaded; ``nvrm`` is the first line of
        ``/proc/driver/nvidia/version``."""
        self.nvidia_driver(version)
        self.module("nvidia_uvm")
        procfile = self.proc / "driver" / "nvidia" / "version"
        procfile.parent.mkdir(parents=True)
        procfile.write_text(f"{nvrm}\nGCC version:  gcc version 13.3.0\n")

    def cpu_flags(self, flags: str, model: str = "Intel(R) Xeon(R) Platinum 8480+") -> None:
        (self.proc / "cpuinfo").write_text(
            f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\n"
            f"flags\t\t: {flags}\n"
        )

    def dmi(self, **fields: str) -> None:
        folder = self.sys / "class" / "dmi" / "id"
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in fields.items():
            (folder / name).write_text(f"{value}\n")

    def os_release(self, text: str) -> None:
        (self.root / "os-release").write_text(text)

    def pci_ids(self, lines: dict[str, str]) -> None:
        body = "".join(f"\t{device}  {name}\n" for device, name in lines.items())
        (self.root / "pci.ids").write_text(f"# test\n10de  NVIDIA Corporation\n{body}")


@pytest.fixture
def cli() -> CliRunner:
    """A runner for ``ganglion.cli.app`` with every command group registered once."""
    if not any(info.typer_instance is doctor_app for info in app.registered_groups):
        _register_all()
    return CliRunner()


@pytest.fixture
def fake_host(tmp_path: Path) -> Callable[..., FakeHost]:
    """``fake_host(iommu=True, kernel=...)`` -> an empty :class:`FakeHost` to fill."""
    count = iter(range(100))

    def make(*, iommu: bool = True, kernel: str = "6.12.9-amd64") -> FakeHost:
        return FakeHost(tmp_path / f"host{next(count)}", iommu=iommu, kernel=kernel)

    return make


@pytest.fixture
def m4000_host(fake_host: Callable[..., FakeHost]) -> FakeHost:
    """The Quadro M4000 in a clean group behind its root port; USB in a group of its own."""
    host = fake_host()
    host.bridge()
    host.gpu(driver="nouveau")
    host.usb()
    return host


OPEN_580 = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build"
PROPRIETARY_580 = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 23 2025"
PROPRIETARY_590 = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  590.44.01  Tue Nov 25 2025"
X86_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep pge cmov pat clflush mmx fxsr sse sse2 syscall "
    "nx lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand "
    "bmi1 avx2 bmi2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni "
    "avx_vnni amx_bf16 amx_tile amx_int8"
)
GUEST_FLAGS = f"{X86_FLAGS} hypervisor"
BARE_FLAGS = f"{X86_FLAGS} vmx"


@pytest.fixture
def h200_guest(fake_host: Callable[..., FakeHost]) -> FakeHost:
    """The real H200 VM guest of issue 17: Ubuntu 24.04 on Linux 6.18, one H200 at 00:06.0
    (class 0x030200, no audio function, no IOMMU group) bound to nvidia, the open 580.159.04
    module and nvidia_uvm loaded, ``/sys/kernel/iommu_groups`` empty. The hypervisor flag and
    QEMU's DMI are what a KVM guest shows (the issue did not list them)."""
    host = fake_host(kernel="6.18.0-061800-generic")
    host.os_release('PRETTY_NAME="Ubuntu 24.04.3 LTS"\nID=ubuntu\nID_LIKE=debian\n')
    host.cpu_flags(GUEST_FLAGS)
    host.dmi(sys_vendor="QEMU", product_name="Standard PC (Q35 + ICH9, 2009)")
    host.gpu("0000:00:06", "2335", audio=None, driver="nvidia", group=None, klass=THREE_D)
    host.nvidia_loaded(OPEN_580, "580.159.04")
    return host


@pytest.fixture
def m4000_nouveau(m4000_host: FakeHost) -> FakeHost:
    """A bare-metal host with IOMMU groups, its Quadro M4000 on nouveau."""
    m4000_host.cpu_flags(BARE_FLAGS)
    m4000_host.module("nouveau")
    return m4000_host


@pytest.fixture
def m4000_580(fake_host: Callable[..., FakeHost]) -> FakeHost:
    """The same card on bare metal, on the 580 proprietary driver."""
    host = fake_host()
    host.cpu_flags(BARE_FLAGS)
    host.bridge()
    host.gpu(driver="nvidia")
    host.usb()
    host.nvidia_loaded(PROPRIETARY_580, "580.95.05")
    return host


@pytest.fixture
def m4000_590(fake_host: Callable[..., FakeHost]) -> FakeHost:
    """The same card on a host that moved to 590, which no longer drives it: the module is
    loaded, the card is left unbound."""
    host = fake_host()
    host.cpu_flags(BARE_FLAGS)
    host.bridge()
    host.gpu()
    host.nvidia_loaded(PROPRIETARY_590, "590.44.01")
    return host
