"""The doctor's CPU section: the llama.cpp build's features against the CPU's, and verdicts."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from ganglion.cli import app
from ganglion.doctor.cpu import CpuCheck
from ganglion.doctor.report import check_cpu, doctor
from ganglion.doctor.sysfs import HostPaths
from ganglion.llamacpp import InstalledBuild, PortableBuild, parse_system_info, read_build
from tests.conftest import need
from tests.test_llamacpp import HASWELL_FLAGS, NATIVE_EXTRAS, NATIVE_INFO, PORTABLE_INFO

SAPPHIRE_RAPIDS = (
    "fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq "
    "avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vnni amx_bf16 amx_tile amx_int8"
)
REBUILD = f"{sys.executable} -m ganglion local build --force"


def check(info: str | None, flags: str, error: str | None = None) -> CpuCheck:
    build = (
        InstalledBuild(None)
        if info is None
        else InstalledBuild("0.3.36", parse_system_info(info), info, error=error)
    )
    return CpuCheck("a CPU", frozenset(flags.split()), build, PortableBuild.for_machine("x86_64"))


def test_a_portable_build_on_an_avx512_amx_cpu_is_ok() -> None:
    cpu = check(PORTABLE_INFO, SAPPHIRE_RAPIDS)
    assert (cpu.missing, cpu.beyond_baseline) == ([], [])
    verdict, message = cpu.verdict
    assert verdict == "ok"
    assert "any x86-64 CPU with AVX2" in message
    assert {"AVX512", "AMX_INT8", "AVX2"} <= set(cpu.features)


def test_a_native_build_on_the_cpu_that_built_it_is_a_warning() -> None:
    cpu = check(NATIVE_INFO, SAPPHIRE_RAPIDS)
    assert cpu.missing == []
    assert cpu.beyond_baseline == NATIVE_EXTRAS
    verdict, message = cpu.verdict
    assert verdict == "warn"
    assert "native build" in message
    assert "cannot move to another machine" in message
    assert REBUILD in message


def test_a_native_build_on_an_older_cpu_will_crash() -> None:
    cpu = check(NATIVE_INFO, HASWELL_FLAGS)
    assert cpu.missing == NATIVE_EXTRAS
    verdict, message = cpu.verdict
    assert verdict == "error"
    assert "SIGILL" in message
    assert "AVX512" in message
    assert REBUILD in message


def test_a_build_that_dies_loading_or_is_absent() -> None:
    dead = check("", SAPPHIRE_RAPIDS, error="loading it died with signal SIGILL (4)")
    assert dead.verdict[0] == "error"
    assert "SIGILL" in dead.verdict[1]
    assert REBUILD in dead.verdict[1]
    absent = check(None, SAPPHIRE_RAPIDS)
    assert absent.verdict[0] == "absent"
    assert "ganglion local build" in absent.verdict[1]
    assert absent.as_json()["llama_cpp"]["installed"] is False


def test_the_report_reads_the_cpu_from_the_proc_tree(fake_host) -> None:
    host = fake_host()
    cpuinfo = f"vendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: {HASWELL_FLAGS}\n"
    (host.proc / "cpuinfo").write_text(cpuinfo)
    native = InstalledBuild("0.3.36", parse_system_info(NATIVE_INFO), NATIVE_INFO)
    report = doctor(host.paths, ["10de:13f1"], llama=lambda: native)
    assert report.cpu is not None
    data = report.as_json()["cpu"]
    assert data["model"] == "Xeon"
    assert "AVX512" not in data["features"]
    assert data["llama_cpp"]["verdict"] == "error"
    assert "AVX512" in data["llama_cpp"]["missing"]
    assert doctor(host.paths, ["10de:13f1"]).cpu is None  # the vfio plan asks no build


# --- the real installed build, through the CLI ------------------------------------------


@pytest.fixture
def installed() -> InstalledBuild:
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    return read_build()


@pytest.mark.llama
def test_the_doctor_recognises_the_installed_portable_build(cli, installed) -> None:
    result = cli.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    cpu = json.loads(result.stdout)["cpu"]
    assert cpu["llama_cpp"]["version"] == installed.version
    assert cpu["llama_cpp"]["features"] == sorted(installed.features)
    assert "AVX2" in cpu["llama_cpp"]["features"]
    assert cpu["llama_cpp"]["verdict"] == "ok", cpu["llama_cpp"]["message"]
    assert cpu["llama_cpp"]["wheel"] == str(installed.wheel)
    assert check_cpu(HostPaths(), read_build).missing == []


@pytest.mark.llama
def test_the_doctor_says_it_in_words(cli, installed) -> None:
    result = cli.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert f"llama-cpp-python {installed.version} uses" in result.stdout
    assert "portable: runs on" in result.stdout
