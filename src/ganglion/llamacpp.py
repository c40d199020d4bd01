"""The llama.cpp build ganglion runs: llama-cpp-python compiled portable, kept in a wheel cache
of ganglion's own, and what an installed build says it was compiled to use.

llama.cpp tunes itself to the CPU that compiles it (``GGML_NATIVE``, on by default). A wheel
built that way on an AVX-512/AMX Xeon died with SIGSEGV on its first generation, and pip
reuses a wheel it built once whatever ``CMAKE_ARGS`` said. So ganglion builds the wheel
itself, with a fixed baseline (AVX2 on x86-64, the architecture's own baseline elsewhere)
and pip's cache off, keeps it under ``CACHE/llama-cpp-python-VERSION-MACHINE-DIGEST/`` (the
digest is of the CMake flags), and installs it from there: ``ganglion local build``.

The installed build is inspected in a child process (:func:`read_build`): a build that uses an
instruction this CPU lacks can die while loading, and must not take the caller with it. Its
answer is kept in the user's cache folder under a fingerprint of the build and the CPU, so
that ``ganglion doctor`` asks only once per build.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from platformdirs import user_cache_dir

from ganglion.errors import LocalFleetError

DISTRIBUTION = "llama-cpp-python"
#: The llama-cpp-python release ganglion builds and tests against.
VERSION = "0.3.36"

#: x86-64: AVX2, FMA and F16C (Intel Haswell, AMD Zen and newer), nothing tuned to the builder.
X86_64_FLAGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
)
#: Any other machine: llama.cpp's own baseline for the architecture.
GENERIC_FLAGS = ("-DGGML_NATIVE=OFF",)

#: The CPU features llama.cpp's system info reports (``AVX2 = 1``) -> the ``/proc/cpuinfo``
#: flag that provides each. Names not listed (OPENMP, REPACK, LLAMAFILE) are not CPU features.
CPU_FLAGS: dict[str, str] = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "AVX_VNNI": "avx_vnni",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
    "NEON": "asimd",
    "ARM_FMA": "asimd",
    "FP16_VA": "asimdhp",
    "DOTPROD": "asimddp",
    "MATMUL_INT8": "i8mm",
    "SVE": "sve",
    "SME": "sme",
}

#: What the portable x86-64 flags let a build use (llama.cpp adds BMI2, which every AVX2 CPU
#: has); the rest needs a CPU newer than the baseline.
X86_64_BASELINE = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"})

SYSTEM_INFO_SCRIPT = (
    "import sys, llama_cpp; sys.stdout.write(llama_cpp.llama_print_system_info().decode())"
)
SYSTEM_INFO_TIMEOUT_S = 60.0
NATIVE_SUFFIXES = frozenset({".so", ".dylib", ".dll"})


def cache_root() -> Path:
    """Where built wheels are kept: ``$GANGLION_WHEEL_CACHE``, else the user's cache folder."""
    configured = os.environ.get("GANGLION_WHEEL_CACHE")
    return Path(configured) if configured else Path(user_cache_dir("ganglion")) / "wheels"


def rebuild_command() -> str:
    """The exact command that rebuilds llama-cpp-python portable and installs it here."""
    return f"{shlex.quote(sys.executable)} -m ganglion local build --force"


def exit_reason(returncode: int) -> str:
    """``-11`` -> ``'signal SIGSEGV (11)'``; ``1`` -> ``'exit status 1'``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "an unknown signal"
    return f"signal {name} ({-returncode})"


@dataclass(frozen=True)
class PortableBuild:
    """One llama-cpp-python version built with fixed flags for one machine architecture."""

    version: str
    machine: str
    cmake_args: tuple[str, ...]

    @classmethod
    def for_machine(cls, machine: str | None = None, version: str = VERSION) -> PortableBuild:
        machine = (machine or platform.machine()).lower()
        flags = X86_64_FLAGS if machine in {"x86_64", "amd64"} else GENERIC_FLAGS
        return cls(version, machine, flags)

    @property
    def key(self) -> str:
        digest = hashlib.sha256(" ".join(self.cmake_args).encode()).hexdigest()[:12]
        return f"{DISTRIBUTION}-{self.version}-{self.machine}-{digest}"

    @property
    def baseline(self) -> frozenset[str] | None:
        """The CPU features this build may use, where ganglion knows them (x86-64)."""
        return X86_64_BASELINE if self.cmake_args == X86_64_FLAGS else None

    @property
    def describe(self) -> str:
        cpus = "any x86-64 CPU with AVX2" if self.baseline else f"any {self.machine} CPU"
        return f"llama-cpp-python {self.version} for {cpus}"

    def directory(self, root: Path) -> Path:
        return root / self.key

    def cached_wheel(self, root: Path) -> Path | None:
        """The wheel built earlier with exactly these flags, if the cache has it."""
        found = sorted(self.directory(root).glob("*.whl"))
        return found[0] if found else None

    def wheel_command(self, into: Path) -> list[str]:
        """pip builds the wheel from source, reading and writing none of pip's own cache."""
        return [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
            "--no-binary", DISTRIBUTION, f"{DISTRIBUTION}=={self.version}",
            "--wheel-dir", str(into),
        ]  # fmt: skip

    def build_env(self) -> dict[str, str]:
        """The environment for :meth:`wheel_command`: these flags, every core."""
        env = {**os.environ, "CMAKE_ARGS": " ".join(self.cmake_args), "FORCE_CMAKE": "1"}
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        return env


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


def build_wheel(build: PortableBuild, root: Path, log: Path, run: Runner = subprocess.run) -> Path:
    """Compile the wheel into the cache (a few minutes) and return it. A failed build leaves
    the cache as it was and raises :class:`LocalFleetError` with the tail of ``log``."""
    root.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{build.key}-", dir=root))
    try:
        with log.open("wb") as handle:
            done = run(
                build.wheel_command(staging),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=build.build_env(),
                check=False,
            )
        wheels = sorted(staging.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise LocalFleetError(
                f"building {build.describe} failed ({exit_reason(done.returncode)}); "
                f"the log is {log}:\n{tail(log)}"
            )
        manifest = {"version": build.version, "machine": build.machine}
        (staging / "build.json").write_text(
            json.dumps({**manifest, "cmake_args": list(build.cmake_args)}, indent=2) + "\n"
        )
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is read by every clone
        target = build.directory(root)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # all at once: a wheel in the cache is always a whole one
        return target / wheels[0].name
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install_wheel(build: PortableBuild, wheel: Path, run: Runner = subprocess.run) -> None:
    """Put exactly ``wheel`` in place of whatever llama-cpp-python is installed, then add its
    server extra's dependencies: the only llama-cpp-python pip may take there is that wheel."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    for command in (
        [*pip, "--no-deps", "--force-reinstall", str(wheel)],
        [*pip, "--only-binary", DISTRIBUTION, "--find-links", str(wheel.parent),
         f"{DISTRIBUTION}[server]=={build.version}"],
    ):  # fmt: skip
        done = run(command, capture_output=True, check=False)
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()[-2000:]
            raise LocalFleetError(f"installing {wheel} failed: {' '.join(command)}\n{said}")


def installed_wheel() -> Path | None:
    """The wheel file the installed llama-cpp-python came from, as pip recorded it, if any."""
    try:
        recorded = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    url = urlparse(json.loads(recorded).get("url", "")) if recorded else None
    if url is None or url.scheme != "file" or not url.path.endswith(".whl"):
        return None
    return Path(unquote(url.path))


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


# --- what an installed build uses -------------------------------------------------------


@dataclass(frozen=True)
class InstalledBuild:
    """What the installed llama-cpp-python reports, or why it could not say."""

    version: str | None
    features: frozenset[str] = frozenset()
    system_info: str = ""
    wheel: Path | None = None
    error: str | None = None

    @property
    def installed(self) -> bool:
        return self.version is not None


def parse_system_info(text: str) -> frozenset[str]:
    """The CPU features in llama.cpp's system info: ``CPU : AVX = 1 | AVX2 = 1 | ...``."""
    return frozenset(
        name for name, on in re.findall(r"([A-Z][A-Z0-9_]*) = (\d+)", text) if on != "0"
    ) & frozenset(CPU_FLAGS)


def cpu_model(cpuinfo: str) -> str | None:
    """The CPU's name in ``/proc/cpuinfo`` (``model name`` on x86)."""
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags in ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm)."""
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def system_info(python: str = sys.executable) -> str:
    """llama.cpp's system info from the llama-cpp-python of ``python``'s environment, asked
    in a child process; :class:`LocalFleetError` says how it died if it could not answer."""
    command = [python, "-c", SYSTEM_INFO_SCRIPT]
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=SYSTEM_INFO_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LocalFleetError(f"could not ask it: {error}") from error
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        why = ": ".join([exit_reason(done.returncode), *said])
        raise LocalFleetError(f"loading it died with {why}")
    return done.stdout.decode(errors="replace").strip()


def build_fingerprint(version: str) -> str:
    """What identifies the installed build's answer on this machine: its version, the path,
    size and mtime of each native library it installed, this interpreter, and the CPU's flags
    (a build that loads on one CPU may die on another)."""
    identity: list[object] = [version, sys.executable]
    for file in metadata.distribution(DISTRIBUTION).files or ():
        if file.suffix in NATIVE_SUFFIXES:
            path = Path(str(file.locate()))
            try:
                stat = path.stat()
            except OSError:
                continue
            identity.append([str(path), stat.st_size, stat.st_mtime_ns])
    try:
        identity.append(sorted(cpu_flags(Path("/proc/cpuinfo").read_text())))
    except OSError:
        identity.append(platform.machine())
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def system_info_cache() -> Path:
    """Where a build's system info is kept between commands, by fingerprint."""
    return Path(user_cache_dir("ganglion")) / "llama-system-info"


def remembered_system_info(version: str) -> str:
    """The installed build's system info: read from the cache when this very build already
    answered on this machine (asking loads it in a child process: about 0.35 s and 40 MB),
    else asked and remembered. Only an answer is kept, never a crash."""
    kept = system_info_cache() / f"{build_fingerprint(version)}.txt"
    try:
        return kept.read_text()
    except OSError:
        pass
    text = system_info()
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(kept)
    except OSError:
        pass  # a read-only cache costs time on the next command, nothing else
    return text


@cache
def read_build() -> InstalledBuild:
    """What the installed llama-cpp-python was compiled to use (cached in the process, and on
    disk by fingerprint: the installed build does not change under a running process)."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return InstalledBuild(None)
    try:
        text = remembered_system_info(version)
    except LocalFleetError as error:
        return InstalledBuild(version, error=str(error))
    return InstalledBuild(version, parse_system_info(text), text, installed_wheel())


def missing_features(features: Iterable[str], flags: frozenset[str]) -> list[str]:
    """The features a build uses that a CPU with ``flags`` lacks (it would crash there)."""
    return sorted(name for name in features if CPU_FLAGS[name] not in flags)
