"""``ganglion doctor vfio``: the passthrough plan on fixture hosts."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ganglion.cli import app
from ganglion.doctor import DoctorError
from ganglion.doctor.vfio import plan


def test_the_m4000_plan(m4000_host) -> None:
    result = plan(m4000_host.paths)
    assert result.gpus == ["0000:01:00.0"]
    assert result.functions == ["0000:01:00.0", "0000:01:00.1"]
    assert result.binding == "ids"
    assert result.ids == ["10de:0fbb", "10de:13f1"]
    assert result.kernel_cmdline == "intel_iommu=on iommu=pt vfio-pci.ids=10de:0fbb,10de:13f1"
    (check,) = result.checks
    assert (check.group, check.clean) == ("1", True)
    files = {f.path: f for f in result.files}
    assert "options vfio-pci ids=10de:0fbb,10de:13f1" in files["/etc/modprobe.d/vfio.conf"].content
    assert "softdep nouveau pre: vfio-pci" in files["/etc/modprobe.d/vfio.conf"].content
    assert files["/etc/initramfs-tools/modules"].action == "append"
    assert "vfio_pci" in files["/etc/initramfs-tools/modules"].content
    hugepages = files["/etc/sysctl.d/80-ganglion-hugepages.conf"].content
    assert hugepages == "vm.nr_hugepages = 8192\n"
    assert "update-initramfs -u" in result.commands
    assert "-device vfio-pci,host=01:00.0,multifunction=on" in result.qemu
    assert "-device vfio-pci,host=01:00.1" in result.qemu
    assert "-mem-path /dev/hugepages -mem-prealloc" in result.qemu
    assert (result.guest.driver_branch, result.guest.kernel_modules) == ("580", "proprietary")
    assert result.guest.cuda_major == 12
    assert "Ollama" in result.guest.engines
    assert result.warnings == []


def test_the_libvirt_domain_is_well_formed(m4000_host) -> None:
    domain = ET.fromstring(plan(m4000_host.paths, memory_gib=24, cpus=6).libvirt_xml)
    assert domain.get("type") == "kvm"
    assert domain.findtext("memory") == "24"
    assert domain.findtext("vcpu") == "6"
    assert domain.find("memoryBacking/hugepages") is not None
    addresses = [
        (a.get("bus"), a.get("slot"), a.get("function"))
        for a in domain.findall("devices/hostdev/source/address")
    ]
    assert addresses == [("0x01", "0x00", "0x0"), ("0x01", "0x00", "0x1")]


def test_a_group_shared_with_usb_warns(fake_host) -> None:
    host = fake_host()
    host.gpu()
    host.usb(group="1")
    result = plan(host.paths)
    assert result.checks[0].clean is False
    assert any("USB controller" in warning for warning in result.warnings)


def test_iommu_off_still_plans_and_says_so(fake_host) -> None:
    host = fake_host(iommu=False)
    host.gpu()
    result = plan(host.paths)
    assert result.iommu_enabled is False
    assert [check.clean for check in result.checks] == [None]
    assert any("IOMMU is off" in warning for warning in result.warnings)
    assert "intel_iommu=on" in result.kernel_cmdline


def test_vfio_pci_already_bound(fake_host) -> None:
    host = fake_host()
    host.gpu(driver="vfio-pci")
    result = plan(host.paths)
    assert any("already bound to vfio-pci" in warning for warning in result.warnings)


def test_two_identical_cards_need_a_choice_then_driver_override(fake_host) -> None:
    host = fake_host()
    host.gpu("0000:01:00", group="1")
    host.gpu("0000:02:00", group="2")
    with pytest.raises(DoctorError, match=r"several NVIDIA GPUs .* choose .* --pci"):
        plan(host.paths)
    result = plan(host.paths, ["02:00.0"])
    assert result.binding == "driver_override"
    assert result.functions == ["0000:02:00.0", "0000:02:00.1"]
    assert "vfio-pci.ids" not in result.kernel_cmdline
    files = {f.path: f.content for f in result.files}
    script = files["/usr/local/sbin/ganglion-vfio-override"]
    assert "echo vfio-pci > /sys/bus/pci/devices/0000:02:00.0/driver_override" in script
    assert "0000:01:00.0" not in script
    assert (
        "install vfio-pci /usr/local/sbin/ganglion-vfio-override"
        in files["/etc/modprobe.d/vfio.conf"]
    )
    assert "/etc/initramfs-tools/hooks/ganglion-vfio" in files


def test_the_gpu_that_needs_a_vm_is_chosen_beside_a_blackwell(fake_host) -> None:
    host = fake_host()
    host.gpu("0000:01:00", "2b85", audio="22e8", group="1")
    host.gpu("0000:02:00", "13f1", group="2")
    result = plan(host.paths)
    assert result.gpus == ["0000:02:00.0"]
    assert result.binding == "ids"


def test_amd_hosts_and_dracut_distributions(fake_host) -> None:
    host = fake_host()
    host.gpu()
    (host.proc / "cpuinfo").write_text("vendor_id\t: AuthenticAMD\n")
    (host.root / "os-release").write_text('NAME="Fedora Linux"\nID=fedora\n')
    result = plan(host.paths)
    assert result.kernel_cmdline.startswith("amd_iommu=on iommu=pt")
    assert "dracut -f" in result.commands
    assert any(f.path == "/etc/dracut.conf.d/vfio.conf" for f in result.files)


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        (["03:00.0"], "no PCI device at 0000:03:00.0"),
        (["00:14.0"], "USB controller .* not an NVIDIA GPU"),
        (["zz"], "malformed PCI address"),
    ],
)
def test_bad_addresses(m4000_host, wanted: list[str], message: str) -> None:
    with pytest.raises(DoctorError, match=message):
        plan(m4000_host.paths, wanted)


def test_no_gpu_to_pass(fake_host) -> None:
    with pytest.raises(DoctorError, match="No NVIDIA GPU found"):
        plan(fake_host().paths)


def test_vfio_cli_json_and_human(cli, m4000_host) -> None:
    result = cli.invoke(app, ["doctor", "vfio", "--json", *m4000_host.args, "--pci", "01:00.0"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["gpus"] == ["0000:01:00.0"]
    assert data["checks"][0]["clean"] is True
    assert data["groups"]["1"] == ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]
    assert data["guest"]["driver_branch"] == "580"
    human = cli.invoke(app, ["doctor", "vfio", *m4000_host.args])
    assert human.exit_code == 0, human.output
    for text in ("vfio-pci.ids=10de:0fbb,10de:13f1", "qemu-system-x86_64", "<domain", "580"):
        assert text in human.stdout
