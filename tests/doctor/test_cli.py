"""``ganglion doctor`` through the CLI: the JSON contract, fixture hosts, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ganglion.cli import app
from ganglion.doctor import DoctorError
from tests.doctor.cuda_fakes import H200_LIVE, build_libcuda, nvidia_smi

PATH_KEYS = {
    "nouveau": {"works", "cuda", "why"},
    "nvidia_open": {"works", "required", "why"},
    "nvidia_proprietary": {"works", "last_branch", "why"},
    "vfio_passthrough": {"works", "why"},
}


def run_json(cli, *args: str) -> dict[str, Any]:
    result = cli.invoke(app, ["doctor", "--json", *args])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def assert_contract(gpu: dict[str, Any]) -> None:
    for key in ("pci_id", "bdf", "name", "chip", "arch", "compute_capability", "driver_in_use"):
        assert key in gpu
    for path, keys in PATH_KEYS.items():
        assert keys <= set(gpu["paths"][path])
    assert isinstance(gpu["cuda"]["max_major"], int)
    assert set(gpu["engines"]) >= {"ollama", "llama_cpp", "vllm", "tensorrt_llm", "pytorch"}
    assert isinstance(gpu["recommendation"], str)
    assert gpu["recommendation"]


def test_quadro_m4000_by_id(cli, fake_host) -> None:
    data = run_json(cli, *fake_host().args, "--pci-id", "10de:13f1", "--kernel", "6.12.9")
    (gpu,) = data["gpus"]
    assert_contract(gpu)
    assert (gpu["pci_id"], gpu["bdf"], gpu["arch"], gpu["compute_capability"]) == (
        "10de:13f1",
        None,
        "maxwell",
        "5.2",
    )
    paths = gpu["paths"]
    assert paths["nouveau"]["cuda"] is False
    assert paths["nvidia_open"]["works"] is False
    assert paths["nvidia_proprietary"]["works"] is True
    assert paths["nvidia_proprietary"]["last_branch"] == "580"
    assert gpu["engines"]["ollama"] is True
    assert gpu["engines"]["vllm"] is False
    assert gpu["cuda"]["max_major"] == 12
    assert set(data["host"]) >= {"kernel", "distribution", "iommu"}
    assert data["host"]["kernel"] == "6.12.9"
    assert data["host"]["distribution"] is None or isinstance(data["host"]["distribution"], str)


def test_several_ids_give_several_gpus(cli, fake_host) -> None:
    data = run_json(cli, *fake_host().args, "--pci-id", "10de:13f1", "--pci-id", "10de:2b85")
    assert [gpu["arch"] for gpu in data["gpus"]] == ["maxwell", "blackwell"]
    assert data["gpus"][1]["paths"]["nvidia_open"]["required"] is True


def test_human_output_for_the_m4000(cli, fake_host) -> None:
    result = cli.invoke(app, ["doctor", *fake_host().args, "--pci-id", "10de:13f1"])
    assert result.exit_code == 0
    for text in ("Quadro M4000", "Maxwell", "5.2", "✓", "✗", "580", "Install the NVIDIA 580"):
        assert text in result.stdout


def test_clean_group_with_nouveau_bound(cli, m4000_host) -> None:
    data = run_json(cli, *m4000_host.args)
    (gpu,) = data["gpus"]
    assert_contract(gpu)
    assert gpu["bdf"] == "0000:01:00.0"
    assert gpu["driver_in_use"] == "nouveau"
    assert gpu["iommu_group"] == "1"
    assert gpu["paths"]["vfio_passthrough"]["works"] is True
    assert data["host"]["iommu"] == {"enabled": True, "groups": 2}


def test_group_shared_with_a_usb_controller(cli, fake_host) -> None:
    host = fake_host()
    host.bridge()
    host.gpu()
    host.usb(group="1")
    (gpu,) = run_json(cli, *host.args)["gpus"]
    vfio = gpu["paths"]["vfio_passthrough"]
    assert vfio["works"] is False
    assert "USB controller" in vfio["why"]
    assert "0000:00:14.0" in vfio["why"]


def test_iommu_off(cli, fake_host) -> None:
    host = fake_host(iommu=False)
    host.gpu()
    data = run_json(cli, *host.args)
    assert data["host"]["iommu"]["enabled"] is False
    vfio = data["gpus"][0]["paths"]["vfio_passthrough"]
    assert vfio["works"] is False
    assert "IOMMU is off" in vfio["why"]


def test_vfio_pci_bound(cli, fake_host) -> None:
    host = fake_host()
    host.gpu(driver="vfio-pci")
    (gpu,) = run_json(cli, *host.args)["gpus"]
    assert gpu["driver_in_use"] == "vfio-pci"
    assert gpu["paths"]["vfio_passthrough"]["works"] is True


def test_two_identical_cards(cli, fake_host) -> None:
    host = fake_host()
    host.gpu("0000:01:00", group="1")
    host.gpu("0000:02:00", group="2")
    gpus = run_json(cli, *host.args)["gpus"]
    assert [(g["bdf"], g["pci_id"]) for g in gpus] == [
        ("0000:01:00.0", "10de:13f1"),
        ("0000:02:00.0", "10de:13f1"),
    ]


def test_no_nvidia_gpu_is_a_friendly_answer(cli, fake_host) -> None:
    host = fake_host()
    host.device("0000:00:02.0", "8086:3e92", 0x030000, driver="i915", group="0")
    data = run_json(cli, *host.args)
    assert data["gpus"] == []
    assert "No NVIDIA GPU found" in data["message"]
    assert "0000:00:02.0 [8086:3e92]" in data["message"]
    human = cli.invoke(app, ["doctor", *host.args])
    assert human.exit_code == 0
    assert "No NVIDIA GPU found" in human.stdout


def test_an_unknown_nvidia_gpu_in_sysfs_is_reported_not_fatal(cli, fake_host) -> None:
    host = fake_host()
    host.gpu(device="fff0", audio=None)
    data = run_json(cli, *host.args)
    assert data["gpus"] == []
    assert "10de:fff0" in data["unknown"][0]


def test_a_new_id_is_guessed_from_the_system_pci_ids(cli, fake_host) -> None:
    host = fake_host()
    host.pci_ids({"2c99": "GB207 [GeForce RTX 5999]"})
    (gpu,) = run_json(cli, *host.args, "--pci-id", "10de:2c99")["gpus"]
    assert (gpu["arch"], gpu["compute_capability"], gpu["guessed"]) == ("blackwell", "12.0", True)
    assert "guessed" in gpu["note"]
    assert gpu["name"] == "GeForce RTX 5999"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pci-id", "10de13f1"], "malformed PCI id"),
        (["--pci-id", "8086:1234"], "not an NVIDIA device"),
        (["--pci-id", "10de:0fbb"], "cannot tell which GPU"),
    ],
)
def test_bad_ids_are_doctor_errors(cli, fake_host, args: list[str], message: str) -> None:
    result = cli.invoke(app, ["doctor", *fake_host().args, *args])
    assert isinstance(result.exception, DoctorError)
    assert message in str(result.exception)


def test_unreadable_sysfs_roots(cli, tmp_path: Path) -> None:
    missing = cli.invoke(app, ["doctor", "--sysfs", str(tmp_path / "missing")])
    assert isinstance(missing.exception, DoctorError)
    assert "not a directory" in str(missing.exception)
    not_sysfs = cli.invoke(app, ["doctor", "--sysfs", str(tmp_path)])
    assert "does not look like sysfs" in str(not_sysfs.exception)


@pytest.mark.parametrize(
    "args",
    [
        ["doctor", "--pci-id", "nonsense"],
        ["doctor", "--pci-id", "1002:73bf"],
        ["doctor", "--sysfs", "/nonexistent/sys"],
        ["doctor", "vfio", "--sysfs", "/nonexistent/sys"],
        ["doctor", "--pci-id", "10de:2335", "--send"],
        ["doctor", "--json", "--no-cuda-check", "--send", "--gateway", "http://127.0.0.1:9"],
        ["enlist", "k3s", "--node", "Bad_Node"],
    ],
)
def test_bad_input_prints_one_line_without_a_traceback(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ganglion", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error:")
    assert result.stderr.strip().count("\n") == 0


# issue 17: what is loaded and working, and VM guests

WIDE = {"COLUMNS": "200"}


def test_the_h200_guest_through_the_cli(cli, h200_guest, tmp_path: Path) -> None:
    library = build_libcuda(tmp_path / "lib")
    args = [*h200_guest.args, "--cuda-check", "--libcuda", str(library)]
    result = cli.invoke(app, ["doctor", *args], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "this machine is a VM guest (QEMU); the GPU was passed through to it" in out
    assert (
        "✓ working: nvidia-open 580.159.04, CUDA 13.0, 1 GPU initialised (checked with libcuda)"
        in out
    )
    assert (
        "→ Working: nvidia-open 580.159.04, CUDA 13.0, 1 GPU initialised. Nothing to install" in out
    )
    assert "run `ganglion doctor vfio` on the host" in out
    for wrong in ("intel_iommu", "GRUB", "Install the current NVIDIA driver"):
        assert wrong not in out
    data = run_json(cli, *args)
    assert_contract(data["gpus"][0])
    assert data["gpus"][0]["live"]["state"] == "working"
    assert {key: data["live"][key] for key in H200_LIVE} == H200_LIVE
    assert data["host"]["virtualization"]["guest"] is True


def test_a_fixture_tree_is_not_cuda_checked_unless_asked(cli, h200_guest) -> None:
    live = run_json(cli, *h200_guest.args)["live"]
    assert (live["cuda_ok"], live["checked_with"]) == (None, None)
    assert live["why"] == "nvidia-open 580.159.04 is loaded, CUDA not checked"


def test_the_cli_falls_back_to_nvidia_smi_on_path(cli, h200_guest, tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    nvidia_smi(folder)
    env = {"PATH": f"{folder}:/usr/bin:/bin"}
    args = [*h200_guest.args, "--cuda-check", "--libcuda", "/nonexistent/libcuda.so.1"]
    result = cli.invoke(app, ["doctor", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["live"]["checked_with"], data["live"]["cuda_ok"]) == ("nvidia-smi", False)
    assert data["live"]["cuda_driver_version"] == "13.0"
    gpu = data["gpus"][0]
    assert gpu["live"]["state"] == "broken"
    assert "CUDA programs such as Ollama cannot use them" in gpu["recommendation"]


def test_nouveau_on_the_m4000_through_the_cli(cli, m4000_nouveau) -> None:
    data = run_json(cli, *m4000_nouveau.args, "--no-cuda-check")
    (gpu,) = data["gpus"]
    assert (gpu["driver_in_use"], gpu["live"]["state"]) == ("nouveau", "wrong")
    assert gpu["recommendation"].startswith("nouveau drives it: display only, never CUDA")
    assert data["live"]["driver"] == "nouveau"
    assert data["host"]["virtualization"] == {"guest": False, "hypervisor": None, "evidence": []}


def test_no_vfio_plan_in_the_guest_through_the_cli(cli, h200_guest) -> None:
    result = cli.invoke(app, ["doctor", "vfio", *h200_guest.args])
    assert isinstance(result.exception, DoctorError)
    assert "run `ganglion doctor vfio` there" in str(result.exception)
