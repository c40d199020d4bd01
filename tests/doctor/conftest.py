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
        group: str = "1",
    ) -> None:
        """An NVIDIA card: the GPU at ``slot.0`` and its HDMI audio at ``slot.1``."""
        self.device(f"{slot}.0", f"10de:{device}", VGA, driver=driver, group=group)
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
