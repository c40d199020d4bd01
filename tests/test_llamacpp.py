"""The portable llama.cpp build: its flags and cache key, the wheel cache, reading what a build
uses; and, through the real installed build, that ``make`` put the portable wheel in place."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ganglion import llamacpp
from ganglion.errors import LocalFleetError
from ganglion.llamacpp import (
    X86_64_BASELINE,
    PortableBuild,
    build_wheel,
    cpu_flags,
    cpu_model,
    exit_reason,
    missing_features,
    parse_system_info,
)
from tests.conftest import need

#: What llama-cpp-python 0.3.36 printed here, built portable and built natively on a Xeon.
PORTABLE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
NATIVE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
#: What the native build uses beyond the portable baseline (a Haswell has none of it).
NATIVE_EXTRAS = ["AMX_INT8", "AVX512", "AVX512_BF16", "AVX512_VBMI", "AVX512_VNNI", "AVX_VNNI"]
HASWELL_FLAGS = "fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2"
WHEEL = "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"


def test_system_info_gives_cpu_features_only() -> None:
    assert parse_system_info(PORTABLE_INFO) == X86_64_BASELINE
    native = parse_system_info(NATIVE_INFO)
    assert sorted(native - X86_64_BASELINE) == NATIVE_EXTRAS
    assert parse_system_info("CPU : AVX = 1 | AVX2 = 0 | OPENMP = 1 |") == {"AVX"}


def test_cpuinfo_flags_and_model_on_x86_and_arm() -> None:
    x86 = f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6430\nflags\t\t: {HASWELL_FLAGS}\n"
    assert cpu_model(x86) == "Intel(R) Xeon(R) Gold 6430"
    assert {"avx2", "fma", "bmi2"} <= cpu_flags(x86)
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm asimdhp asimddp\n"
    assert cpu_flags(arm) == {"fp", "asimd", "evtstrm", "asimdhp", "asimddp"}
    assert cpu_model(arm) is None
    assert cpu_flags("") == frozenset()


def test_a_native_build_is_missing_features_on_an_older_cpu() -> None:
    haswell = frozenset(HASWELL_FLAGS.split())
    assert missing_features(parse_system_info(PORTABLE_INFO), haswell) == []
    assert missing_features(parse_system_info(NATIVE_INFO), haswell) == NATIVE_EXTRAS


def test_exit_reasons_name_the_signal() -> None:
    assert exit_reason(-11) == "signal SIGSEGV (11)"
    assert exit_reason(-4) == "signal SIGILL (4)"
    assert exit_reason(1) == "exit status 1"
    assert exit_reason(-99) == "signal an unknown signal (99)"


def test_the_portable_flags_turn_native_tuning_off_on_every_machine() -> None:
    x86 = PortableBuild.for_machine("x86_64")
    assert x86.cmake_args[0] == "-DGGML_NATIVE=OFF"
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"} <= set(x86.cmake_args)
    assert not any("AVX512" in flag or "AMX" in flag for flag in x86.cmake_args)
    assert x86.baseline == X86_64_BASELINE
    arm = PortableBuild.for_machine("aarch64")
    assert arm.cmake_args == ("-DGGML_NATIVE=OFF",)
    assert arm.baseline is None
    assert "AVX2" in x86.describe
    assert "aarch64" in arm.describe


def test_the_cache_key_changes_with_version_machine_and_flags() -> None:
    build = PortableBuild.for_machine("x86_64", "0.3.36")
    assert build.key.startswith("llama-cpp-python-0.3.36-x86_64-")
    assert build.key == PortableBuild.for_machine("x86_64", "0.3.36").key
    others = {
        PortableBuild.for_machine("x86_64", "0.3.37").key,
        PortableBuild.for_machine("aarch64", "0.3.36").key,
        PortableBuild("0.3.36", "x86_64", (*build.cmake_args, "-DGGML_AVX512=ON")).key,
    }
    assert build.key not in others
    assert len(others) == 3


def test_the_wheel_command_never_touches_pips_cache_nor_a_prebuilt_wheel(tmp_path: Path) -> None:
    build = PortableBuild.for_machine("x86_64")
    command = build.wheel_command(tmp_path)
    assert command[1:4] == ["-m", "pip", "wheel"]
    assert "--no-cache-dir" in command
    assert command[command.index("--no-binary") + 1] == "llama-cpp-python"
    assert f"llama-cpp-python=={build.version}" in command
    assert build.build_env()["CMAKE_ARGS"] == " ".join(build.cmake_args)


class FakePip:
    """Stands in for ``pip wheel``: records the call, writes a wheel (or fails)."""

    def __init__(self, returncode: int = 0, wheel: bool = True) -> None:
        self.returncode = returncode
        self.wheel = wheel
        self.calls: list[dict[str, Any]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append({"command": command, **kwargs})
        kwargs["stdout"].write(b"Building wheel for llama-cpp-python\nninja: build stopped\n")
        if self.wheel:
            into = Path(command[command.index("--wheel-dir") + 1])
            (into / WHEEL).write_bytes(b"a wheel")
        return subprocess.CompletedProcess(command, self.returncode)


def test_a_built_wheel_lands_in_the_cache_under_its_key(tmp_path: Path) -> None:
    build = PortableBuild.for_machine("x86_64")
    pip = FakePip()
    wheel = build_wheel(build, tmp_path, tmp_path / "build.log", run=pip)
    assert wheel == tmp_path / build.key / WHEEL
    assert build.cached_wheel(tmp_path) == wheel
    recorded = json.loads((wheel.parent / "build.json").read_text())
    assert recorded["cmake_args"] == list(build.cmake_args)
    assert recorded["version"] == build.version
    assert pip.calls[0]["env"]["CMAKE_ARGS"] == " ".join(build.cmake_args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.log", build.key]


@pytest.mark.parametrize(("returncode", "wheel"), [(1, False), (-9, True), (0, False)])
def test_a_failed_build_leaves_the_cache_as_it_was(
    tmp_path: Path, returncode: int, wheel: bool
) -> None:
    build = PortableBuild.for_machine("x86_64")
    with pytest.raises(LocalFleetError, match="failed") as caught:
        build_wheel(build, tmp_path, tmp_path / "build.log", run=FakePip(returncode, wheel))
    assert "ninja: build stopped" in str(caught.value)  # the log's tail
    assert str(tmp_path / "build.log") in str(caught.value)
    assert build.cached_wheel(tmp_path) is None
    assert [p.name for p in tmp_path.iterdir()] == ["build.log"]


def test_the_cache_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GANGLION_WHEEL_CACHE", str(tmp_path))
    assert llamacpp.cache_root() == tmp_path
    monkeypatch.delenv("GANGLION_WHEEL_CACHE")
    assert llamacpp.cache_root().parts[-2:] == ("ganglion", "wheels")


# --- the real installed build -----------------------------------------------------------


@pytest.mark.llama
def test_the_installed_build_is_the_portable_wheel_from_ganglions_cache() -> None:
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    build = PortableBuild.for_machine()
    installed = llamacpp.read_build()
    assert installed.error is None, installed.error
    assert installed.version == build.version
    assert installed.wheel == build.cached_wheel(llamacpp.cache_root())
    assert installed.wheel is not None
    assert installed.wheel.parent.name == build.key
    if build.baseline is not None:
        assert installed.features <= build.baseline, installed.system_info
    cpu = Path("/proc/cpuinfo").read_text()
    assert missing_features(installed.features, cpu_flags(cpu)) == [], platform.processor()


# --- the build's answer, kept between commands --------------------------------------------


def test_a_builds_answer_is_asked_once_and_a_crash_is_never_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked: list[str] = []
    answers = iter([LocalFleetError("loading it died with SIGILL"), PORTABLE_INFO, NATIVE_INFO])

    def ask() -> str:
        answer = next(answers)
        asked.append(str(answer))
        if isinstance(answer, LocalFleetError):
            raise answer
        return answer

    monkeypatch.setattr(llamacpp, "system_info", ask)
    monkeypatch.setattr(llamacpp, "system_info_cache", lambda: tmp_path / "kept")
    monkeypatch.setattr(llamacpp, "build_fingerprint", lambda version: f"build-{version}")
    with pytest.raises(LocalFleetError, match="SIGILL"):
        llamacpp.remembered_system_info("0.3.36")
    assert llamacpp.remembered_system_info("0.3.36") == PORTABLE_INFO  # asked again: no crash kept
    assert llamacpp.remembered_system_info("0.3.36") == PORTABLE_INFO  # from the cache
    assert len(asked) == 2
    assert llamacpp.remembered_system_info("0.3.37") == NATIVE_INFO  # another build is asked
    assert len(asked) == 3
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [
        "build-0.3.36.txt",
        "build-0.3.37.txt",
    ]


@pytest.mark.llama
def test_the_fingerprint_names_the_installed_build_and_its_version() -> None:
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    version = importlib.metadata.version(llamacpp.DISTRIBUTION)
    assert llamacpp.build_fingerprint(version) == llamacpp.build_fingerprint(version)
    assert llamacpp.build_fingerprint(version) != llamacpp.build_fingerprint(version + "+other")
