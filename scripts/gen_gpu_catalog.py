"""Generate the doctor's GPU catalog from public facts.

Reads NVIDIA's ``supported-gpus.json`` (590 series) and the PCI ID database's NVIDIA section from
``../shared/data`` and writes two compact tables into the package, which reads only those at run
time:

``src/ganglion/doctor/data/chips.tsv``
    chip codename pattern -> architecture, compute capability: the fallback for ids the GPU
    table lacks (``GM204GL`` -> Maxwell -> 5.2).
``src/ganglion/doctor/data/gpus.tsv``
    device id -> chip, architecture, compute capability, last driver branch, open-module support,
    name. One row per device id NVIDIA's list supports.

Usage (with the project installed, e.g. ``.venv/bin/python``):
``python scripts/gen_gpu_catalog.py [--data DIR] [--out DIR] [--check]``; ``--check``
exits 1 when the committed tables differ from what the data gives.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ganglion.doctor.catalog import base_codename, chip_codename

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "src" / "ganglion" / "doctor" / "data"

NVIDIA_LIST = "nvidia/supported-gpus.590.json"
PCI_IDS = ("pciids/pciids_10de.upstream-2026.08.22.txt", "pciids/pciids_10de.debian-2023.04.10.txt")

# Chip codename (as pci.ids spells it, less the GL/GLM/M/BM product suffix) -> architecture and
# compute capability. First full match wins. Sources: NVIDIA "CUDA GPU Compute Capability"
# (developer.nvidia.com/cuda-gpus) and its legacy page; chip codenames from pci.ids. Pre-Tesla
# chips (no CUDA) carry their architecture's name and an empty compute capability.
CHIPS: list[tuple[str, str, str]] = [
    (r"NV[456]|NV0A", "fahrenheit", ""),
    (r"NV1[0-9A-F]", "celsius", ""),
    (r"NV2[0-9A-F]", "kelvin", ""),
    (r"NV3[0-9A-F]", "rankine", ""),
    (r"NV4[0-9A-F]A?|G7[0-3]|C51[A-Z]*|C6[178]|C73", "curie", ""),
    (r"G80", "tesla", "1.0"),
    (r"G8[46]|G9[2468]C?|C7[789]|MCP7[9A]", "tesla", "1.1"),
    (r"GT21[568]|MCP89", "tesla", "1.2"),
    (r"GT200B?", "tesla", "1.3"),
    (r"GF1[01]0", "fermi", "2.0"),
    (r"GF1[0-9]{2}", "fermi", "2.1"),
    (r"GK10[4-7]", "kepler", "3.0"),
    (r"GK20A", "kepler", "3.2"),
    (r"GK110B?|GK180|GK208B?", "kepler", "3.5"),
    (r"GK210", "kepler", "3.7"),
    (r"GM10[78]", "maxwell", "5.0"),
    (r"GM20[0-9]", "maxwell", "5.2"),
    (r"GM20B", "maxwell", "5.3"),
    (r"GP100", "pascal", "6.0"),
    (r"GP10B", "pascal", "6.2"),
    (r"GP10[0-9]", "pascal", "6.1"),
    (r"GV100", "volta", "7.0"),
    (r"TU1[0-9]{2}", "turing", "7.5"),
    (r"GA100", "ampere", "8.0"),
    (r"GA10[0-9]", "ampere", "8.6"),
    (r"AD10[0-9]", "ada", "8.9"),
    (r"GH100", "hopper", "9.0"),
    (r"GB10[02]", "blackwell", "10.0"),
    (r"GB110", "blackwell", "10.3"),
    (r"GB20B", "blackwell", "12.1"),
    (r"GB20[0-9]", "blackwell", "12.0"),
]

# Three ids NVIDIA lists that pci.ids does not name; their chips from the neighbouring ids of the
# same product line in pci.ids (0045 NV40 GeForce 6800 GT, 014b/014e NV43, 017c NV17).
UNNAMED_CHIPS = {"0046": "NV40", "014c": "NV43", "017d": "NV17"}


def classify(chip: str) -> tuple[str, str] | None:
    base = base_codename(chip)
    for pattern, arch, cc in CHIPS:
        if re.fullmatch(pattern, base):
            return arch, cc
    return None


def read_pci_ids(path: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"^\t([0-9a-f]{4})  (.+)$", line)
        if match:
            names[match.group(1)] = match.group(2).strip()
    return names


def branch_of(chip: dict[str, object]) -> str:
    legacy = chip.get("legacybranch")
    return str(legacy).split(".")[0] if legacy else "current"


def open_modules(chip: dict[str, object]) -> str:
    """``no``, ``yes`` or ``required``.

    NVIDIA's 590 list marks its 580-legacy chips (Maxwell, Pascal, Volta) ``kernelopen`` too;
    that is wrong (the open modules need the GSP, Turing or newer), so a legacy branch means no.
    ``kernelopen`` without ``gsp_proprietary_supported`` means the open modules are required.
    """
    features = chip.get("features") or []
    assert isinstance(features, list)
    if chip.get("legacybranch") or "kernelopen" not in features:
        return "no"
    return "yes" if "gsp_proprietary_supported" in features else "required"


def build_rows(data: Path) -> list[tuple[str, ...]]:
    chips = json.loads((data / NVIDIA_LIST).read_text(encoding="utf-8"))["chips"]
    pci_names: dict[str, str] = {}
    for relative in reversed(PCI_IDS):  # the newer database wins
        pci_names.update(read_pci_ids(data / relative))
    by_id: dict[str, dict[str, object]] = {}
    for chip in chips:
        device = str(chip["devid"]).lower().removeprefix("0x")
        if device not in by_id or ("subdevid" in by_id[device] and "subdevid" not in chip):
            by_id[device] = chip
    rows: list[tuple[str, ...]] = []
    for device, chip in sorted(by_id.items()):
        codename = UNNAMED_CHIPS.get(device) or chip_codename(pci_names.get(device, ""))
        known = classify(codename) if codename else None
        if codename is None or known is None:
            raise SystemExit(f"no chip codename for 10de:{device} ({chip['name']}): extend CHIPS")
        arch, cc = known
        name = str(chip["name"]).removeprefix("NVIDIA ").strip()
        rows.append((device, codename, arch, cc, branch_of(chip), open_modules(chip), name))
    return rows


def render(rows: Sequence[tuple[str, ...]], header: tuple[str, ...], source: str) -> str:
    lines = [f"# Generated by scripts/gen_gpu_catalog.py from {source}. Do not edit."]
    lines.append("\t".join(header))
    lines.extend("\t".join(row) for row in rows)
    return "\n".join(lines) + "\n"


def outputs(data: Path) -> dict[str, str]:
    gpus = render(
        build_rows(data),
        ("device", "chip", "arch", "cc", "branch", "open", "name"),
        f"{NVIDIA_LIST} and {PCI_IDS[0]}",
    )
    chips = render(CHIPS, ("pattern", "arch", "cc"), "NVIDIA's compute capability tables")
    return {"gpus.tsv": gpus, "chips.tsv": chips}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="fail if the tables are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in outputs(args.data).items():
        target = args.out / name
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target} ({text.count(chr(10)) - 2} rows)")
    if stale:
        print(f"stale: {', '.join(stale)}; run scripts/gen_gpu_catalog.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
