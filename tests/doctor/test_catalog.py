"""The GPU table: every architecture from Tesla to Blackwell, drawn from NVIDIA's public list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ganglion.doctor import DoctorError
from ganglion.doctor.catalog import Catalog, base_codename, chip_codename, default_catalog
from ganglion.doctor.facts import ARCHITECTURES
from ganglion.doctor.pciid import parse_bdf, parse_nvidia_id, parse_pci_id, read_pci_ids

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"

# (device id, name in NVIDIA's 590 list, chip, arch, compute capability, last branch, open)
ARCHITECTURE_CASES = [
    ("0191", "GeForce 8800 GTX", "G80", "tesla", "1.0", "340", "no"),
    ("0600", "GeForce 8800 GTS 512", "G92", "tesla", "1.1", "340", "no"),
    ("05e0", "GeForce GTX 295", "GT200b", "tesla", "1.3", "340", "no"),
    ("06c0", "GeForce GTX 480", "GF100", "fermi", "2.0", "390", "no"),
    ("1244", "GeForce GTX 550 Ti", "GF116", "fermi", "2.1", "390", "no"),
    ("1180", "GeForce GTX 680", "GK104", "kepler", "3.0", "470", "no"),
    ("1023", "Tesla K40m", "GK110BGL", "kepler", "3.5", "470", "no"),
    ("102d", "Tesla K80", "GK210GL", "kepler", "3.7", "470", "no"),
    ("1381", "GeForce GTX 750", "GM107", "maxwell", "5.0", "580", "no"),
    ("13f1", "Quadro M4000", "GM204GL", "maxwell", "5.2", "580", "no"),
    ("15f8", "Tesla P100-PCIE-16GB", "GP100GL", "pascal", "6.0", "580", "no"),
    ("1b80", "GeForce GTX 1080", "GP104", "pascal", "6.1", "580", "no"),
    ("1db4", "Tesla V100-PCIE-16GB", "GV100GL", "volta", "7.0", "580", "no"),
    ("1e04", "GeForce RTX 2080 Ti", "TU102", "turing", "7.5", "current", "yes"),
    ("20b0", "A100-SXM4-40GB", "GA100", "ampere", "8.0", "current", "yes"),
    ("2204", "GeForce RTX 3090", "GA102", "ampere", "8.6", "current", "yes"),
    ("2684", "GeForce RTX 4090", "AD102", "ada", "8.9", "current", "yes"),
    ("2330", "H100 80GB HBM3", "GH100", "hopper", "9.0", "current", "yes"),
    ("2342", "GH200 120GB", "GH100", "hopper", "9.0", "current", "required"),
    ("2901", "B200", "GB100", "blackwell", "10.0", "current", "required"),
    ("3182", "B300 SXM6 AC", "GB110", "blackwell", "10.3", "current", "required"),
    ("2b85", "GeForce RTX 5090", "GB202", "blackwell", "12.0", "current", "required"),
    ("2e12", "GB10", "GB20B", "blackwell", "12.1", "current", "required"),
]


@pytest.mark.parametrize(
    ("device", "name", "chip", "arch", "cc", "branch", "open_modules"), ARCHITECTURE_CASES
)
def test_every_architecture_from_the_public_list(
    device: str, name: str, chip: str, arch: str, cc: str, branch: str, open_modules: str
) -> None:
    model = default_catalog().lookup(parse_nvidia_id(f"10de:{device}"), {})
    assert (model.name, model.chip, model.arch) == (name, chip, arch)
    assert (model.compute_capability, model.last_branch, model.open_modules) == (
        cc,
        branch,
        open_modules,
    )
    assert not model.guessed


def test_cases_cover_every_cuda_architecture() -> None:
    covered = {case[3] for case in ARCHITECTURE_CASES}
    cuda_archs = [a for a in ARCHITECTURES if list(ARCHITECTURES).index(a) >= 5]
    assert covered == set(cuda_archs)


def test_blackwell_is_open_modules_only_and_pre_turing_never_open() -> None:
    catalog = default_catalog()
    models = [catalog.lookup(parse_pci_id(f"10de:{d}"), {}) for d in catalog.device_ids()]
    blackwell = [m for m in models if m.arch == "blackwell"]
    assert blackwell
    assert all(m.open_modules == "required" for m in blackwell)
    old = {"tesla", "fermi", "kepler", "maxwell", "pascal", "volta"}
    assert all(m.open_modules == "no" for m in models if m.arch in old)


def test_the_table_agrees_with_the_architecture_facts() -> None:
    catalog = default_catalog()
    assert len(catalog) > 1000
    for device in catalog.device_ids():
        model = catalog.lookup(parse_pci_id(f"10de:{device}"), {})
        assert model.arch in ARCHITECTURES
        cuda = model.compute_capability is not None
        if cuda and model.last_branch != "367":  # GRID K1/K2 ended on the GRID branch 367
            assert model.last_branch == ARCHITECTURES[model.arch].last_branch, device


def test_system_pci_ids_name_wins_for_known_ids() -> None:
    model = default_catalog().lookup(parse_pci_id("10de:13f1"), {"13f1": "GM204GL [M4000 x]"})
    assert model.name == "M4000 x"
    assert model.arch == "maxwell"


def test_an_id_missing_from_the_table_is_guessed_from_its_chip_codename() -> None:
    names = {"2c99": "GB207M [GeForce RTX 5999 Laptop]", "17ff": "GM204 [Future Maxwell]"}
    model = default_catalog().lookup(parse_pci_id("10de:2c99"), names)
    assert (model.arch, model.compute_capability, model.open_modules) == (
        "blackwell",
        "12.0",
        "required",
    )
    assert model.guessed
    assert "guessed from chip GB207M" in (model.note or "")
    maxwell = default_catalog().lookup(parse_pci_id("10de:17ff"), names)
    assert (maxwell.arch, maxwell.compute_capability, maxwell.last_branch) == (
        "maxwell",
        "5.2",
        "580",
    )


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({}, "neither in ganglion's GPU table nor in this system's pci.ids"),
        ({"0fbb": "GM204 High Definition Audio Controller"}, "not a GPU"),
        ({"0fbb": "Some Future Thing [X]"}, "codename is not one ganglion knows"),
    ],
)
def test_ids_that_cannot_be_placed_say_why(names: dict[str, str], message: str) -> None:
    with pytest.raises(DoctorError, match=message):
        default_catalog().lookup(parse_pci_id("10de:0fbb"), names)


@pytest.mark.parametrize(
    ("chip", "base"),
    [("GM204GL", "GM204"), ("GK110BGL", "GK110B"), ("GM20B", "GM20B"), ("GT200b", "GT200B")],
)
def test_base_codename(chip: str, base: str) -> None:
    assert base_codename(chip) == base


def test_codename_found_anywhere_in_the_name() -> None:
    assert chip_codename("nForce 220/420 NV1A [GeForce2 MX]") == "NV1A"
    assert chip_codename("[GeForce RTX 5090]") is None


def test_classify_unknown_chip() -> None:
    assert Catalog.load().classify("GR100") is None


@pytest.mark.parametrize("text", ["10de", "10de:13f", "10de-13f1", "zzzz:13f1", ""])
def test_malformed_pci_ids(text: str) -> None:
    with pytest.raises(DoctorError, match="malformed PCI id"):
        parse_pci_id(text)


def test_non_nvidia_id() -> None:
    with pytest.raises(DoctorError, match="not an NVIDIA device"):
        parse_nvidia_id("8086:1234")


def test_bdf_forms() -> None:
    assert parse_bdf("01:00.0") == "0000:01:00.0"
    assert parse_bdf("0000:0A:00.1") == "0000:0a:00.1"
    with pytest.raises(DoctorError, match="malformed PCI address"):
        parse_bdf("1:0.0")


def test_read_pci_ids_takes_only_nvidia(tmp_path: Path) -> None:
    path = tmp_path / "pci.ids"
    path.write_text(
        "# comment\n10de  NVIDIA Corporation\n\t13f1  GM204GL [Quadro M4000]\n"
        "\t\t10de 1153  Quadro M4000\n10df  Emulex\n\t13f2  not this\n"
    )
    assert read_pci_ids(path) == {"13f1": "GM204GL [Quadro M4000]"}
    assert read_pci_ids(tmp_path / "missing") == {}


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
def test_generated_tables_are_up_to_date() -> None:
    script = REPO / "scripts" / "gen_gpu_catalog.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check", "--data", str(SHARED)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
def test_every_device_nvidia_lists_is_in_the_table() -> None:
    chips = json.loads((SHARED / "nvidia" / "supported-gpus.590.json").read_text())["chips"]
    catalog = default_catalog()
    for chip in chips:
        device = chip["devid"].lower().removeprefix("0x")
        model = catalog.lookup(parse_pci_id(f"10de:{device}"), {})
        legacy = chip.get("legacybranch")
        assert model.last_branch == (legacy.split(".")[0] if legacy else "current"), device
