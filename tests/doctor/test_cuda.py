"""The CUDA check against fake NVIDIA user space (a compiled libcuda, an nvidia-smi script on
PATH), its timeout, and this machine, which has no GPU."""

from __future__ import annotations

import ctypes.util
import shutil
import time
from pathlib import Path

import pytest

from ganglion.doctor.cuda import Ran, bus_id, check_cuda, parse_nvidia_smi, run_bounded
from tests.doctor.cuda_fakes import H200_SMI, NO_DRIVER_SMI, build_libcuda, nvidia_smi

NOWHERE = ("/nonexistent/libcuda.so.1",)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH, for a fake nvidia-smi."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


def test_libcuda_that_initialises(tmp_path: Path) -> None:
    library = build_libcuda(tmp_path / "lib")
    check = check_cuda((str(library),))
    assert (check.ok, check.how, check.cuda_version) == (True, "libcuda", "13.0")
    assert check.why == "CUDA 13.0, 1 GPU initialised"
    (device,) = check.devices
    assert (device.name, device.bus_id, device.memory_mib) == (
        "NVIDIA H200",
        "0000:00:06.0",
        143771,
    )
    assert device.compute_capability == "9.0"
    assert device.bandwidth_gbps == pytest.approx(4022.8, abs=0.1)
    assert check.library_version == "580.159.04"


def test_the_first_library_that_loads_is_the_one_checked(tmp_path: Path) -> None:
    library = build_libcuda(tmp_path / "lib", cuda=12080)
    check = check_cuda((*NOWHERE, str(library)))
    assert (check.ok, check.cuda_version) == (True, "12.8")


def test_cuinit_failing_names_the_error(tmp_path: Path) -> None:
    library = build_libcuda(tmp_path / "lib", init=100)
    check = check_cuda((str(library),))
    assert (check.ok, check.error) == (False, "CUDA_ERROR_NO_DEVICE")
    assert check.why == "cuInit failed with CUDA_ERROR_NO_DEVICE (100)"


def test_a_hung_cuinit_times_out(tmp_path: Path) -> None:
    library = build_libcuda(tmp_path / "lib", hang=True)
    check = check_cuda((str(library),), timeout_s=1.0)
    assert (check.ok, check.error) == (False, "timeout")
    assert "did not answer within 1 s" in check.why
    assert "dmesg" in check.why


def test_a_libcuda_that_kills_its_process_does_not_kill_the_doctor(tmp_path: Path) -> None:
    library = build_libcuda(tmp_path / "lib", crash=True)
    check = check_cuda((str(library),))
    assert check.ok is False
    assert "killed the check" in check.why
    assert "SIGABRT" in check.why


def test_without_libcuda_nvidia_smi_is_asked_and_cuda_is_not_ok(bin_dir: Path) -> None:
    nvidia_smi(bin_dir)
    check = check_cuda(NOWHERE)
    assert (check.ok, check.how, check.cuda_version) == (False, "nvidia-smi", "13.0")
    assert check.why.startswith("nvidia-smi sees 1 GPU (driver 580.159.04, CUDA 13.0), but no")
    assert "CUDA programs such as Ollama cannot use them" in check.why
    assert [d.bus_id for d in check.devices] == ["0000:00:06.0"]


def test_nvidia_smi_that_cannot_reach_the_driver(bin_dir: Path) -> None:
    nvidia_smi(bin_dir, NO_DRIVER_SMI, status=9)
    check = check_cuda(NOWHERE)
    assert (check.ok, check.how) == (False, "nvidia-smi")
    assert "nvidia-smi failed: NVIDIA-SMI has failed" in check.why


def test_a_hung_nvidia_smi_times_out(bin_dir: Path) -> None:
    nvidia_smi(bin_dir, hang=True)
    check = check_cuda(NOWHERE, timeout_s=1.0)
    assert (check.ok, check.error) == (False, "timeout")
    assert "nvidia-smi did not answer within 1 s" in check.why


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_run_bounded_kills_the_whole_session(tmp_path: Path) -> None:
    """A shell killed at the timeout takes its children with it: none is left holding the
    pipes (or the GPU)."""
    pid_file = tmp_path / "pid"
    ran = run_bounded(["sh", "-c", f"sleep 600 & echo $! > {pid_file}; wait"], timeout_s=1.0)
    assert ran.returncode is None
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)
    assert run_bounded(["sh", "-c", "echo done"], timeout_s=10) == Ran(0, "done\n", "")


def test_this_machine_has_no_libcuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real check on a machine without NVIDIA's user space (this one)."""
    if ctypes.util.find_library("cuda") or shutil.which("nvidia-smi"):
        pytest.skip("this machine has NVIDIA's user space")
    check = check_cuda()
    assert (check.ok, check.how, check.error) == (False, None, "no libcuda")
    assert check.why.startswith("no libcuda (libcuda.so.1, libcuda.so not found by the loader)")
    assert "no nvidia-smi on PATH" in check.why


def test_parse_nvidia_smi() -> None:
    driver, cuda, devices = parse_nvidia_smi(H200_SMI)
    assert (driver, cuda) == ("580.159.04", "13.0")
    assert [(d.name, d.bus_id, d.memory_mib) for d in devices] == [
        ("NVIDIA H200", "0000:00:06.0", 143771)
    ]
    assert parse_nvidia_smi("") == (None, None, ())


@pytest.mark.parametrize(
    ("text", "bdf"),
    [
        ("00000000:00:06.0", "0000:00:06.0"),
        ("0000:3B:00.0", "0000:3b:00.0"),
        ("01:00.0", "0000:01:00.0"),
    ],
)
def test_bus_ids_as_sysfs_writes_them(text: str, bdf: str) -> None:
    assert bus_id(text) == bdf
