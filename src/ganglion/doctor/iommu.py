"""Whether a GPU's IOMMU group can be handed to a VM.

A group is usable when every device in it goes to the VM with the GPU (the GPU's own functions:
its HDMI audio, USB-C), is already bound to vfio-pci or pci-stub, or is a PCI bridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ganglion.doctor.pciid import slot_of
from ganglion.doctor.sysfs import PASSTHROUGH_DRIVERS, PciDevice


@dataclass(frozen=True)
class GroupCheck:
    """The verdict on one GPU's group: ``clean`` is ``None`` when it cannot be told."""

    group: str | None
    members: tuple[str, ...]
    functions: tuple[str, ...]
    others: tuple[PciDevice | str, ...]
    clean: bool | None
    why: str


def _goes_along(member: PciDevice, gpu: PciDevice) -> bool:
    return (
        slot_of(member.bdf) == slot_of(gpu.bdf)
        or member.is_bridge
        or member.driver in PASSTHROUGH_DRIVERS
    )


def describe(device: PciDevice | str) -> str:
    """``0000:00:14.0 USB controller [8086:a36d] (xhci_hcd)``."""
    if isinstance(device, str):
        return f"{device} (not readable)"
    driver = f" ({device.driver})" if device.driver else ""
    return f"{device.bdf} {device.class_name} [{device.pci_id}]{driver}"


def check_group(
    gpu: PciDevice, devices: Mapping[str, PciDevice], groups: Mapping[str, list[str]]
) -> GroupCheck:
    """Judge ``gpu``'s group; ``devices`` by address, ``groups`` from sysfs."""
    if not groups or gpu.iommu_group is None:
        return GroupCheck(None, (), (), (), None, "the IOMMU is off: no groups to judge")
    members = tuple(groups.get(gpu.iommu_group, [gpu.bdf]))
    functions = tuple(bdf for bdf in members if slot_of(bdf) == slot_of(gpu.bdf))
    others: list[PciDevice | str] = []
    for bdf in members:
        member = devices.get(bdf)
        if member is None:
            others.append(bdf)
        elif not _goes_along(member, gpu):
            others.append(member)
    if others:
        shared = ", ".join(describe(other) for other in others)
        why = f"group {gpu.iommu_group} also holds {shared}: it would go to the VM too"
        return GroupCheck(gpu.iommu_group, members, functions, tuple(others), False, why)
    extra = len(members) - len(functions)
    bridges = (
        f" and {extra} bridge or vfio-bound device{'s' if extra != 1 else ''}" if extra else ""
    )
    why = (
        f"group {gpu.iommu_group} holds only the GPU's {len(functions)} "
        f"function{'s' if len(functions) != 1 else ''}{bridges}"
    )
    return GroupCheck(gpu.iommu_group, members, functions, (), True, why)
