"""What is loaded and working now: the fixture hosts of issue 17 (the H200 VM guest, the Quadro
M4000 on nouveau, on 580 and under a too-new 590, a host with IOMMU groups), the nvidia
module's own words, and VM guests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ganglion.doctor import DoctorError
from ganglion.doctor.catalog import default_catalog
from ganglion.doctor.cuda import CudaCheck, CudaDevice
from ganglion.doctor.live import LoadedDriver, judge, parse_nvrm, read_loaded
from ganglion.doctor.pciid import parse_pci_id
from ganglion.doctor.report import Report, doctor
from ganglion.doctor.sysfs import PciDevice, virtualization
from ganglion.doctor.vfio import plan
from tests.doctor.conftest import (
    BARE_FLAGS,
    GUEST_FLAGS,
    OPEN_580,
    PROPRIETARY_580,
    FakeHost,
)
from tests.doctor.cuda_fakes import H200_CUDA, H200_LIVE, NO_LIBCUDA

M4000_CUDA = CudaCheck(
    True,
    "CUDA 13.0, 1 GPU initialised",
    "libcuda",
    13000,
    (CudaDevice("Quadro M4000", "0000:01:00.0", 8192, "5.2", 192.3),),
    "/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05",
)


def run(host: FakeHost, cuda: CudaCheck | None = None) -> Report:
    return doctor(host.paths, cuda=(lambda: cuda) if cuda else None)


# the H200 VM guest


def test_the_h200_guest_is_working_and_the_next_step_is_enlisting(h200_guest: FakeHost) -> None:
    report = run(h200_guest, H200_CUDA)
    (gpu,) = report.gpus
    assert (gpu.model.name, gpu.model.arch, gpu.driver_in_use) == ("H200", "hopper", "nvidia")
    assert gpu.in_use is not None
    assert gpu.in_use.state == "working"
    assert gpu.in_use.why == "working: nvidia-open 580.159.04, CUDA 13.0, 1 GPU initialised"
    rec = gpu.recommendation
    assert rec.path == "open"
    assert rec.text.startswith("Working: nvidia-open 580.159.04, CUDA 13.0, 1 GPU initialised.")
    assert "Nothing to install" in rec.text
    assert "enlist" in rec.text
    assert "Install" not in rec.text


def test_the_h200_guest_live_section(h200_guest: FakeHost) -> None:
    live = run(h200_guest, H200_CUDA).as_json()["live"]
    assert live == H200_LIVE | {
        "modules": ["nvidia", "nvidia_uvm"],
        "checked_with": "libcuda",
        "library": "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04",
        "gpus_initialised": 1,
        "devices": [
            {
                "name": "NVIDIA H200",
                "bus_id": "0000:00:06.0",
                "memory_mib": 143771,
                "compute_capability": "9.0",
                "bandwidth_gbps": 4022.8,
            }
        ],
    }


def test_the_h200_guest_is_a_vm_guest_and_vfio_speaks_to_the_host(h200_guest: FakeHost) -> None:
    report = run(h200_guest, H200_CUDA)
    host = report.as_json()["host"]
    assert host["virtualization"] == {
        "guest": True,
        "hypervisor": "QEMU",
        "evidence": ["CPU flag: hypervisor", "DMI sys_vendor: QEMU"],
    }
    assert host["iommu"] == {"enabled": False, "groups": 0}
    vfio = report.gpus[0].diagnosis.vfio
    assert vfio.works is False
    assert vfio.why.startswith("this machine is a VM guest (QEMU); the GPU was passed through")
    assert "run `ganglion doctor vfio` on the host" in vfio.why
    assert "intel_iommu" not in vfio.why


def test_no_vfio_plan_inside_the_guest(h200_guest: FakeHost) -> None:
    with pytest.raises(DoctorError) as raised:
        plan(h200_guest.paths)
    message = str(raised.value)
    assert message.startswith("this machine is a VM guest (QEMU); the GPU was passed through")
    assert "run `ganglion doctor vfio` there" in message


def test_the_h200_guest_without_a_cuda_check_is_loaded_not_working(h200_guest: FakeHost) -> None:
    report = run(h200_guest)
    (gpu,) = report.gpus
    assert gpu.in_use is not None
    assert (gpu.in_use.state, gpu.in_use.why) == (
        "loaded",
        "nvidia-open 580.159.04 drives it; CUDA not checked",
    )
    assert gpu.recommendation.path == "open"
    assert "Install" not in gpu.recommendation.text
    live = report.as_json()["live"]
    assert (live["cuda_ok"], live["why"]) == (
        None,
        "nvidia-open 580.159.04 is loaded, CUDA not checked",
    )


def test_the_h200_guest_with_no_libcuda_says_what_to_install(h200_guest: FakeHost) -> None:
    (gpu,) = run(h200_guest, NO_LIBCUDA).gpus
    assert gpu.in_use is not None
    assert gpu.in_use.state == "broken"
    assert gpu.in_use.why.startswith("nvidia-open 580.159.04 drives it, but CUDA does not work")
    assert gpu.in_use.fix is not None
    assert "libnvidia-compute-580" in gpu.in_use.fix
    assert gpu.recommendation.text == f"{gpu.in_use.why}. {gpu.in_use.fix}"


def test_a_libcuda_older_than_the_module_is_a_mismatch(h200_guest: FakeHost) -> None:
    mismatch = CudaCheck(
        False,
        "cuInit failed with CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (803)",
        "libcuda",
        library="/usr/lib/libcuda.so.580.95.05",
        error="CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    )
    (gpu,) = run(h200_guest, mismatch).gpus
    assert gpu.in_use is not None
    assert gpu.in_use.fix is not None
    assert "libcuda 580.95.05 does not match the kernel module 580.159.04" in gpu.in_use.fix


def test_cuda_that_sees_another_gpu_only(h200_guest: FakeHost) -> None:
    other = CudaCheck(True, "CUDA 13.0, 1 GPU initialised", "libcuda", 13000, M4000_CUDA.devices)
    (gpu,) = run(h200_guest, other).gpus
    assert gpu.in_use is not None
    assert gpu.in_use.state == "broken"
    assert "not this one" in gpu.in_use.why


# the Quadro M4000: on nouveau, on 580, under 590; a bare-metal host with IOMMU groups


def test_nouveau_on_a_cuda_card_is_wrong_and_the_fix_is_the_580_driver(
    m4000_nouveau: FakeHost,
) -> None:
    report = run(m4000_nouveau, NO_LIBCUDA)
    (gpu,) = report.gpus
    assert gpu.in_use is not None
    assert gpu.in_use.state == "wrong"
    assert gpu.in_use.why.startswith("nouveau drives it: display only, never CUDA")
    rec = gpu.recommendation
    assert rec.path == "proprietary"
    assert rec.text.startswith("nouveau drives it")
    assert "Install the NVIDIA 580 driver" in rec.text
    assert "blacklist nouveau" in rec.text
    live = report.as_json()["live"]
    assert (live["driver"], live["flavour"], live["cuda_ok"]) == ("nouveau", None, False)
    assert live["why"].startswith("nouveau drives the GPU: display only, never CUDA")


def test_the_host_with_iommu_groups_is_bare_metal(m4000_nouveau: FakeHost) -> None:
    report = run(m4000_nouveau)
    assert report.host.guest is None
    assert (report.host.iommu_enabled, report.host.iommu_groups) == (True, 2)
    assert report.gpus[0].diagnosis.vfio.works is True
    vfio = plan(m4000_nouveau.paths)
    assert "intel_iommu=on" in vfio.kernel_cmdline
    assert not any("VM guest" in warning for warning in vfio.warnings)


def test_the_m4000_on_580_proprietary_is_working(m4000_580: FakeHost) -> None:
    report = run(m4000_580, M4000_CUDA)
    (gpu,) = report.gpus
    assert gpu.in_use is not None
    assert gpu.in_use.why == "working: nvidia 580.95.05 (proprietary), CUDA 13.0, 1 GPU initialised"
    assert gpu.recommendation.path == "proprietary"
    assert gpu.recommendation.text.startswith("Working: nvidia 580.95.05 (proprietary)")
    live = report.as_json()["live"]
    assert (live["flavour"], live["version"], live["cuda_ok"]) == ("proprietary", "580.95.05", True)


def test_a_branch_too_new_for_the_maxwell_says_so_and_how_to_fix_it(m4000_590: FakeHost) -> None:
    report = run(m4000_590, NO_LIBCUDA)
    (gpu,) = report.gpus
    assert gpu.driver_in_use is None
    assert gpu.in_use is not None
    assert gpu.in_use.state == "wrong"
    assert gpu.in_use.why == (
        "nvidia 590.44.01 (proprietary) is loaded, a branch too new for the Quadro M4000 "
        "(its last is 580)"
    )
    rec = gpu.recommendation
    assert rec.path == "vfio"
    assert "Go back to the 580 driver and hold it there, or: Pass it through to a VM" in rec.text


def test_the_open_modules_on_a_maxwell_are_the_wrong_flavour(m4000_580: FakeHost) -> None:
    model = default_catalog().lookup(parse_pci_id("10de:13f1"), {})
    device = PciDevice("0000:01:00.0", model.pci_id, 0x030000, None)
    loaded = LoadedDriver(frozenset({"nvidia"}), "open", "580.159.04")
    in_use = judge(model, device, loaded)
    assert in_use is not None
    assert in_use.state == "wrong"
    assert "open kernel modules cannot drive a pre-Turing GPU" in in_use.why
    assert in_use.fix is not None
    assert "--kernel-module-type=proprietary" in in_use.fix


def test_proprietary_modules_on_a_blackwell_are_the_wrong_flavour() -> None:
    model = default_catalog().lookup(parse_pci_id("10de:2b85"), {})
    device = PciDevice("0000:01:00.0", model.pci_id, 0x030000, "nvidia")
    in_use = judge(model, device, LoadedDriver(frozenset({"nvidia"}), "proprietary", "580.95.05"))
    assert in_use is not None
    assert in_use.state == "wrong"
    assert "works only with the open kernel modules" in in_use.why


def test_a_card_given_by_id_has_no_live_state(m4000_580: FakeHost) -> None:
    report = doctor(m4000_580.paths, ["10de:2335"])
    assert report.gpus[0].in_use is None
    assert report.as_json()["gpus"][0]["live"] is None


# the nvidia module's words, and what is loaded


@pytest.mark.parametrize(
    ("line", "flavour", "version"),
    [
        (OPEN_580, "open", "580.159.04"),
        (PROPRIETARY_580, "proprietary", "580.95.05"),
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.86.15  Release Build",
            "open",
            "570.86.15",
        ),
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.256.02  Thu May  2 2024",
            "proprietary",
            "470.256.02",
        ),
        ("", None, None),
    ],
)
def test_parse_nvrm(line: str, flavour: str | None, version: str | None) -> None:
    assert parse_nvrm(f"{line}\nGCC version:  gcc version 12.2.0\n") == (flavour, version)


def test_read_loaded(h200_guest: FakeHost, fake_host: Callable[..., FakeHost]) -> None:
    loaded = read_loaded(h200_guest.paths)
    assert (loaded.modules, loaded.flavour, loaded.version) == (
        frozenset({"nvidia", "nvidia_uvm"}),
        "open",
        "580.159.04",
    )
    assert loaded.label == "nvidia-open 580.159.04"
    empty = read_loaded(fake_host().paths)
    assert (empty.nvidia, empty.label) == (False, "nvidia")


# VM guests


def test_the_hypervisor_flag_alone_makes_a_guest(fake_host: Callable[..., FakeHost]) -> None:
    host = fake_host()
    host.cpu_flags(GUEST_FLAGS)
    guest = virtualization(host.sys, host.proc)
    assert guest is not None
    assert (guest.hypervisor, guest.name) == (None, "an unknown hypervisor")


def test_dmi_alone_makes_a_guest_when_the_flag_is_hidden(
    fake_host: Callable[..., FakeHost],
) -> None:
    """GPU passthrough setups hide the hypervisor flag from the guest (``kvm=off``)."""
    host = fake_host()
    host.cpu_flags(BARE_FLAGS)
    host.dmi(sys_vendor="Microsoft Corporation", product_name="Virtual Machine")
    guest = virtualization(host.sys, host.proc)
    assert guest is not None
    assert guest.hypervisor == "Hyper-V"


def test_a_cloud_name_without_the_flag_is_bare_metal(fake_host: Callable[..., FakeHost]) -> None:
    host = fake_host()
    host.cpu_flags(BARE_FLAGS)
    host.dmi(sys_vendor="Amazon EC2", product_name="p5.metal")
    assert virtualization(host.sys, host.proc) is None
    host.cpu_flags(GUEST_FLAGS)
    guest = virtualization(host.sys, host.proc)
    assert guest is not None
    assert guest.hypervisor == "Amazon EC2"


def test_a_bare_metal_host_and_xen_dom0_are_not_guests(fake_host: Callable[..., FakeHost]) -> None:
    host = fake_host()
    host.cpu_flags(BARE_FLAGS)
    host.dmi(sys_vendor="Supermicro", product_name="SYS-4029GP-TRT")
    assert virtualization(host.sys, host.proc) is None
    (host.sys / "hypervisor").mkdir()
    (host.sys / "hypervisor" / "type").write_text("xen\n")
    (host.proc / "xen").mkdir()
    (host.proc / "xen" / "capabilities").write_text("control_d\n")
    assert virtualization(host.sys, host.proc) is None
    (host.proc / "xen" / "capabilities").write_text("\n")
    guest = virtualization(host.sys, host.proc)
    assert guest is not None
    assert guest.hypervisor == "Xen"


def test_a_card_this_guest_cannot_drive_is_fixed_in_the_guest(
    fake_host: Callable[..., FakeHost],
) -> None:
    """A Pascal card passed through to a guest that moved to 590, which no longer drives it:
    the fix is this VM's driver or system, not a passthrough planned from inside it."""
    host = fake_host(iommu=False)
    host.cpu_flags(GUEST_FLAGS)
    host.dmi(sys_vendor="QEMU")
    host.gpu(device="1b80", audio=None)  # GeForce GTX 1080: Pascal, last branch 580
    host.nvidia_driver("590.44.01")
    (gpu,) = doctor(host.paths).gpus
    text = gpu.recommendation.text
    assert "This machine is a VM guest (QEMU); the GPU was passed through to it" in text
    assert "Give this VM a system the 580 driver builds on" in text
    assert "`ganglion doctor vfio` on the host" in text
    assert "IOMMU" not in text


def test_a_guest_with_a_virtual_iommu_gets_a_plan_with_a_warning(
    fake_host: Callable[..., FakeHost],
) -> None:
    host = fake_host()
    host.cpu_flags(GUEST_FLAGS)
    host.gpu(group="3")
    vfio = plan(host.paths)
    assert any(w.startswith("This machine is itself a VM guest") for w in vfio.warnings)
