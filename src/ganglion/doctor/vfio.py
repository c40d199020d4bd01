"""The VFIO passthrough plan: hand a GPU to a VM that runs the driver the host cannot.

The plan is text for an operator to read and apply: the kernel command line, the vfio-pci
binding (by id, or by address with ``driver_override`` when the host keeps a card with the same
id), the modprobe, initramfs and hugepages files, a QEMU command line and a libvirt domain for a
VM sized to the GPU, and the driver and CUDA to install in the guest.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ganglion.doctor import DoctorError
from ganglion.doctor.catalog import base_codename
from ganglion.doctor.defaults import DEFAULT_CPUS, DEFAULT_MEMORY_GIB
from ganglion.doctor.facts import BRANCHES
from ganglion.doctor.iommu import GroupCheck, describe
from ganglion.doctor.pciid import parse_bdf, slot_of
from ganglion.doctor.report import GpuReport, doctor, nvidia_gpus
from ganglion.doctor.sysfs import HostInfo, HostPaths, PciDevice, iommu_groups, scan
from ganglion.doctor.verdicts import driver_number, guest_line

HUGEPAGE_MIB = 2
OVERRIDE_SCRIPT = "/usr/local/sbin/ganglion-vfio-override"
VFIO_MODULES = ("vfio", "vfio_iommu_type1", "vfio_pci")


@dataclass(frozen=True)
class BootTools:
    """How one distribution family rebuilds its initramfs and its boot menu."""

    family: str
    initramfs_path: str
    initramfs_content: str
    initramfs_command: str
    bootloader_command: str
    include_file: str


BOOT_TOOLS: dict[str, BootTools] = {
    tools.family: tools
    for tools in (
        BootTools(
            "debian",
            "/etc/initramfs-tools/modules",
            "\n".join(VFIO_MODULES) + "\n",
            "update-initramfs -u",
            "update-grub",
            "/etc/initramfs-tools/hooks/ganglion-vfio",
        ),
        BootTools(
            "dracut",
            "/etc/dracut.conf.d/vfio.conf",
            f'force_drivers+=" {" ".join(VFIO_MODULES)} "\n',
            "dracut -f",
            "grub2-mkconfig -o /boot/grub2/grub.cfg",
            "/etc/dracut.conf.d/ganglion-vfio-override.conf",
        ),
        BootTools(
            "arch",
            "/etc/mkinitcpio.conf.d/vfio.conf",
            f"MODULES=({' '.join(reversed(VFIO_MODULES))})\n",
            "mkinitcpio -P",
            "grub-mkconfig -o /boot/grub/grub.cfg",
            "/etc/mkinitcpio.conf.d/ganglion-vfio-override.conf",
        ),
    )
}

FAMILIES: dict[str, str] = {
    "debian": "debian",
    "ubuntu": "debian",
    "fedora": "dracut",
    "rhel": "dracut",
    "centos": "dracut",
    "rocky": "dracut",
    "almalinux": "dracut",
    "suse": "dracut",
    "opensuse": "dracut",
    "arch": "arch",
    "manjaro": "arch",
    "endeavouros": "arch",
}
"""os-release ``ID``/``ID_LIKE`` -> boot tools family (Debian's when none matches)."""

IOMMU_PARAMETERS: dict[str | None, str] = {
    "intel": "intel_iommu=on iommu=pt",
    "amd": "amd_iommu=on iommu=pt",
    None: "intel_iommu=on iommu=pt",
}


@dataclass(frozen=True)
class PlanFile:
    """A file to write (``create``) or to add lines to (``append``)."""

    path: str
    content: str
    action: str = "create"


@dataclass(frozen=True)
class Guest:
    driver_branch: str
    kernel_modules: str
    cuda_major: int
    os: str
    engines: list[str]
    pytorch: str | None


@dataclass(frozen=True)
class VfioPlan:
    gpus: list[str]
    functions: list[str]
    ids: list[str]
    binding: str
    iommu_enabled: bool
    groups: dict[str, list[str]]
    checks: list[GroupCheck]
    kernel_cmdline: str
    files: list[PlanFile]
    commands: list[str]
    memory_gib: int
    cpus: int
    hugepages: int
    qemu: str
    libvirt_xml: str
    guest: Guest
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [
            {
                "group": check.group,
                "members": list(check.members),
                "clean": check.clean,
                "shared_with": [describe(other) for other in check.others],
                "why": check.why,
            }
            for check in self.checks
        ]
        return data


def _select(
    wanted: Sequence[str], gpus: Sequence[PciDevice], devices: Sequence[PciDevice]
) -> list[PciDevice]:
    by_bdf = {device.bdf: device for device in devices}
    chosen = []
    for text in wanted:
        bdf = parse_bdf(text)
        device = by_bdf.get(bdf)
        if device is None:
            raise DoctorError(f"no PCI device at {bdf}")
        if device not in gpus:
            raise DoctorError(
                f"{bdf} is a {device.class_name} [{device.pci_id}], not an NVIDIA GPU"
            )
        chosen.append(device)
    return chosen


def _default_selection(reports: Sequence[GpuReport]) -> list[str]:
    if len(reports) == 1:
        return [reports[0].diagnosis.bdf or ""]
    needing = [r.diagnosis.bdf or "" for r in reports if r.recommendation.path == "vfio"]
    if needing:
        return needing
    listing = ", ".join(f"{r.diagnosis.bdf} ({r.model.name})" for r in reports)
    raise DoctorError(f"several NVIDIA GPUs ({listing}): choose the one to pass through with --pci")


def _family(host: HostInfo) -> BootTools:
    family = next((FAMILIES[i] for i in host.distribution_ids if i in FAMILIES), "debian")
    return BOOT_TOOLS[family]


def _override_files(functions: Sequence[str], tools: BootTools) -> list[PlanFile]:
    lines = "\n".join(
        f"echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override" for bdf in functions
    )
    script = (
        "#!/bin/sh\n"
        "# ganglion: bind these functions to vfio-pci by address; the host keeps a card\n"
        "# with the same PCI id, so vfio-pci.ids= would take both.\n"
        f"{lines}\n"
    )
    modprobe = (
        f"install vfio-pci {OVERRIDE_SCRIPT}; /sbin/modprobe --ignore-install vfio-pci\n"
        "softdep nouveau pre: vfio-pci\n"
        "softdep nvidia pre: vfio-pci\n"
        "softdep snd_hda_intel pre: vfio-pci\n"
    )
    include = {
        "debian": (
            '#!/bin/sh\n[ "$1" = prereqs ] && exit 0\n. /usr/share/initramfs-tools/hook-functions\n'
            f"copy_exec {OVERRIDE_SCRIPT}\n"
        ),
        "dracut": f'install_items+=" {OVERRIDE_SCRIPT} "\n',
        "arch": f"FILES=({OVERRIDE_SCRIPT})\n",
    }[tools.family]
    return [
        PlanFile(OVERRIDE_SCRIPT, script),
        PlanFile("/etc/modprobe.d/vfio.conf", modprobe),
        PlanFile(tools.include_file, include),
    ]


def _ids_files(ids: Sequence[str]) -> list[PlanFile]:
    modprobe = (
        f"options vfio-pci ids={','.join(ids)}\n"
        "softdep nouveau pre: vfio-pci\n"
        "softdep nvidia pre: vfio-pci\n"
        "softdep snd_hda_intel pre: vfio-pci\n"
    )
    return [PlanFile("/etc/modprobe.d/vfio.conf", modprobe)]


def _short(bdf: str) -> str:
    return bdf.removeprefix("0000:")


def qemu_command(name: str, functions: Sequence[str], memory_gib: int, cpus: int) -> str:
    """A QEMU command line for a VM with ``functions`` passed through, memory on hugepages."""
    devices = []
    for bdf in functions:
        primary = bdf.endswith(".0") and any(
            f != bdf and slot_of(f) == slot_of(bdf) for f in functions
        )
        extra = ",multifunction=on" if primary else ""
        devices.append(f"-device vfio-pci,host={_short(bdf)}{extra}")
    parts = [
        "qemu-system-x86_64",
        f"-name {name}",
        "-machine q35,accel=kvm",
        "-cpu host",
        f"-smp {cpus}",
        f"-m {memory_gib}G",
        "-mem-path /dev/hugepages -mem-prealloc",
        *devices,
        f"-drive file=/var/lib/libvirt/images/{name}.qcow2,if=virtio,format=qcow2",
        "-nic user,model=virtio-net-pci,hostfwd=tcp::11434-:11434",
        "-nographic",
    ]
    return " \\\n  ".join(parts)


def libvirt_domain(name: str, functions: Sequence[str], memory_gib: int, cpus: int) -> str:
    """A libvirt domain XML for the same VM."""
    domain = ET.Element("domain", type="kvm")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="GiB").text = str(memory_gib)
    backing = ET.SubElement(domain, "memoryBacking")
    ET.SubElement(backing, "hugepages")
    ET.SubElement(domain, "vcpu", placement="static").text = str(cpus)
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64", machine="q35").text = "hvm"
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(domain, "cpu", mode="host-passthrough", check="none")
    devices = ET.SubElement(domain, "devices")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=f"/var/lib/libvirt/images/{name}.qcow2")
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    interface = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(interface, "source", network="default")
    ET.SubElement(interface, "model", type="virtio")
    for bdf in functions:
        domain_part, bus, rest = bdf.split(":")
        slot, function = rest.split(".")
        hostdev = ET.SubElement(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
        source = ET.SubElement(hostdev, "source")
        ET.SubElement(
            source,
            "address",
            domain=f"0x{domain_part}",
            bus=f"0x{bus}",
            slot=f"0x{slot}",
            function=f"0x{function}",
        )
    ET.SubElement(devices, "console", type="pty")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def _guest(reports: Sequence[GpuReport]) -> Guest:
    oldest = min(reports, key=lambda r: driver_number(r.model))
    branch = oldest.model.last_branch
    flavours = {r.model.open_modules for r in reports}
    modules = "open" if "required" in flavours else "proprietary" if "no" in flavours else "open"
    engines = [name for r in reports for name in r.diagnosis.engines.names()]
    return Guest(
        driver_branch=branch,
        kernel_modules=modules,
        cuda_major=min(r.diagnosis.cuda_major for r in reports),
        os=BRANCHES[branch].guest_os if branch in BRANCHES else "",
        engines=sorted(set(engines)),
        pytorch=oldest.diagnosis.engines.pytorch,
    )


def _warnings(
    reports: Sequence[GpuReport], host: HostInfo, memory_gib: int, functions: Sequence[str]
) -> list[str]:
    notes = []
    if host.guest is not None:
        notes.append(
            f"This machine is itself a VM guest ({host.guest.name}): passing a GPU on to a "
            "nested VM needs the virtual IOMMU the host gave it, and this plan edits this VM, "
            "not the host."
        )
    if not host.iommu_enabled:
        notes.append(
            "The IOMMU is off: enable VT-d (Intel) or AMD-Vi in the firmware, apply the kernel "
            "command line, reboot and run `ganglion doctor vfio` again to judge the groups."
        )
    for report in reports:
        if report.group and report.group.clean is False:
            notes.append(
                f"{report.group.why}. Move the card to another slot (one wired to the CPU), or "
                "pass the whole group through; the ACS override patch weakens isolation."
            )
        if report.driver_in_use == "vfio-pci":
            notes.append(f"{report.diagnosis.bdf} is already bound to vfio-pci: the host is ready.")
    if {r.model.open_modules for r in reports} >= {"no", "required"}:
        notes.append("These GPUs need different kernel modules: give each its own VM.")
    if host.mem_total_mib and host.mem_total_mib < (memory_gib + 4) * 1024:
        notes.append(
            f"The VM's {memory_gib} GiB on hugepages leaves the host less than 4 GiB "
            f"of its {host.mem_total_mib // 1024} GiB: lower --memory."
        )
    if not functions:
        notes.append("No functions found to pass through.")
    return notes


@dataclass(frozen=True)
class _Passthrough:
    """What goes to the VM: the chosen GPUs, every function in their slots, and how the host
    binds those to vfio-pci (by ``ids``, or by address with ``driver_override`` when the host
    keeps a device with one of the ids)."""

    gpus: list[PciDevice]
    reports: list[GpuReport]
    functions: list[str]
    ids: list[str]
    binding: str


def _passthrough(
    devices: Sequence[PciDevice], reports: Sequence[GpuReport], wanted: Sequence[str]
) -> _Passthrough:
    chosen = _select(wanted or _default_selection(reports), nvidia_gpus(devices), devices)
    chosen_bdfs = {gpu.bdf for gpu in chosen}
    slots = {slot_of(gpu.bdf) for gpu in chosen}
    functions = [d.bdf for d in devices if slot_of(d.bdf) in slots]
    ids = sorted({str(d.pci_id) for d in devices if d.bdf in functions})
    kept = {str(d.pci_id) for d in devices if d.bdf not in functions}
    return _Passthrough(
        gpus=chosen,
        reports=[r for r in reports if r.diagnosis.bdf in chosen_bdfs],
        functions=functions,
        ids=ids,
        binding="driver_override" if kept & set(ids) else "ids",
    )


def _kernel_cmdline(host: HostInfo, chosen: _Passthrough) -> str:
    cmdline = IOMMU_PARAMETERS[host.cpu_vendor]
    if chosen.binding == "ids":
        cmdline += f" vfio-pci.ids={','.join(chosen.ids)}"
    return cmdline


def _host_files(chosen: _Passthrough, tools: BootTools, hugepages: int) -> list[PlanFile]:
    binding = (
        _ids_files(chosen.ids)
        if chosen.binding == "ids"
        else _override_files(chosen.functions, tools)
    )
    return [
        *binding,
        PlanFile(tools.initramfs_path, tools.initramfs_content, "append"),
        PlanFile("/etc/sysctl.d/80-ganglion-hugepages.conf", f"vm.nr_hugepages = {hugepages}\n"),
    ]


def _host_commands(chosen: _Passthrough, tools: BootTools, cmdline: str) -> list[str]:
    overrides = chosen.binding != "ids"
    return [
        f'add "{cmdline}" to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub',
        tools.bootloader_command,
        *([f"chmod +x {OVERRIDE_SCRIPT} {tools.include_file}"] if overrides else []),
        tools.initramfs_command,
        "sysctl --system",
        "reboot",
        *(
            f"lspci -nnk -s {_short(bdf)}   # Kernel driver in use: vfio-pci"
            for bdf in chosen.functions
        ),
    ]


def _vm_name(chosen: _Passthrough) -> str:
    slot = _short(slot_of(chosen.gpus[0].bdf)).replace(":", "")
    return f"ganglion-{base_codename(chosen.reports[0].model.chip).lower()}-{slot}"


def plan(
    paths: HostPaths,
    wanted: Sequence[str] = (),
    memory_gib: int = DEFAULT_MEMORY_GIB,
    cpus: int = DEFAULT_CPUS,
    kernel: str | None = None,
) -> VfioPlan:
    """The passthrough plan for the NVIDIA GPUs at ``wanted`` (default: the one needing it)."""
    if memory_gib < 1 or cpus < 1:
        raise DoctorError("--memory and --cpus must be at least 1")
    devices = scan(paths.sysfs)
    report = doctor(paths, kernel=kernel)
    if not report.gpus:
        raise DoctorError(report.message or "no NVIDIA GPU that ganglion knows: nothing to pass")
    if report.host.guest is not None and not report.host.iommu_enabled:
        raise DoctorError(
            f"{guest_line(report.host.guest)}. Passthrough is set up on the host: run "
            "`ganglion doctor vfio` there. Here, `ganglion doctor` checks the driver."
        )
    chosen = _passthrough(devices, report.gpus, wanted)
    host, tools = report.host, _family(report.host)
    cmdline = _kernel_cmdline(host, chosen)
    hugepages = memory_gib * 1024 // HUGEPAGE_MIB
    name, functions = _vm_name(chosen), chosen.functions
    return VfioPlan(
        gpus=sorted({gpu.bdf for gpu in chosen.gpus}),
        functions=functions,
        ids=chosen.ids,
        binding=chosen.binding,
        iommu_enabled=host.iommu_enabled,
        groups=iommu_groups(paths.sysfs),
        checks=[r.group for r in chosen.reports if r.group is not None],
        kernel_cmdline=cmdline,
        files=_host_files(chosen, tools, hugepages),
        commands=_host_commands(chosen, tools, cmdline),
        memory_gib=memory_gib,
        cpus=cpus,
        hugepages=hugepages,
        qemu=qemu_command(name, functions, memory_gib, cpus),
        libvirt_xml=libvirt_domain(name, functions, memory_gib, cpus),
        guest=_guest(chosen.reports),
        warnings=_warnings(chosen.reports, host, memory_gib, functions),
    )
