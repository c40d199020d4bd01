"""PCI ids (``10de:13f1``), PCI addresses (``0000:01:00.0``) and the system's pci.ids database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ganglion.doctor import DoctorError

NVIDIA_VENDOR = "10de"

SYSTEM_PCI_IDS: tuple[Path, ...] = (
    Path("/usr/share/misc/pci.ids"),
    Path("/usr/share/hwdata/pci.ids"),
)
"""Where distributions keep pci.ids (Debian's ``pci.ids`` package; Fedora's ``hwdata``)."""

_PCI_ID = re.compile(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{4})")
_BDF = re.compile(r"(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")
_DEVICE_LINE = re.compile(r"^\t([0-9a-f]{4})  (.+)$")


@dataclass(frozen=True, order=True)
class PciId:
    """A vendor and device id pair, lowercase hex."""

    vendor: str
    device: str

    def __str__(self) -> str:
        return f"{self.vendor}:{self.device}"

    @property
    def is_nvidia(self) -> bool:
        return self.vendor == NVIDIA_VENDOR


def parse_pci_id(text: str) -> PciId:
    """``10de:13f1`` -> ``PciId("10de", "13f1")``; anything else is a :class:`DoctorError`."""
    match = _PCI_ID.fullmatch(text.strip())
    if match is None:
        raise DoctorError(
            f"malformed PCI id {text!r}: expected VVVV:DDDD in hex, such as 10de:13f1"
        )
    return PciId(match.group(1).lower(), match.group(2).lower())


def parse_nvidia_id(text: str) -> PciId:
    """Parse a PCI id and insist that it is NVIDIA's."""
    pci_id = parse_pci_id(text)
    if not pci_id.is_nvidia:
        raise DoctorError(
            f"{pci_id} is not an NVIDIA device (vendor {pci_id.vendor}); "
            f"the doctor knows NVIDIA GPUs, vendor {NVIDIA_VENDOR}"
        )
    return pci_id


def parse_bdf(text: str) -> str:
    """``01:00.0`` or ``0000:01:00.0`` -> ``0000:01:00.0``."""
    match = _BDF.fullmatch(text.strip())
    if match is None:
        raise DoctorError(f"malformed PCI address {text!r}: expected such as 0000:01:00.0")
    domain, bus, slot, function = match.groups()
    return f"{(domain or '0000').lower()}:{bus.lower()}:{slot.lower()}.{function}"


def slot_of(bdf: str) -> str:
    """The device part of an address: ``0000:01:00.1`` -> ``0000:01:00``."""
    return bdf.rsplit(".", 1)[0]


def read_pci_ids(path: Path, vendor: str = NVIDIA_VENDOR) -> dict[str, str]:
    """Device id -> name for one vendor, from a pci.ids file; empty if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    names: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line and not line.startswith(("\t", "#")):
            if inside:
                break
            inside = line.startswith(f"{vendor}  ")
            continue
        if inside:
            match = _DEVICE_LINE.match(line)
            if match:
                names[match.group(1)] = match.group(2).strip()
    return names


def system_pci_ids(paths: tuple[Path, ...] = SYSTEM_PCI_IDS) -> dict[str, str]:
    """NVIDIA's device names from the first readable pci.ids of ``paths``."""
    for path in paths:
        names = read_pci_ids(path)
        if names:
            return names
    return {}
