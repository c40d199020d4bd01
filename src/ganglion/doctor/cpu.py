"""The doctor's CPU section: the CPU features the installed llama.cpp build was compiled to use,
against the ones this CPU has, and whether the build can move to another machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ganglion.llamacpp import (
    CPU_FLAGS,
    InstalledBuild,
    PortableBuild,
    missing_features,
    rebuild_command,
)

Verdict = Literal["ok", "warn", "error", "absent"]


@dataclass(frozen=True)
class CpuCheck:
    """This CPU, and the llama.cpp build installed for the Python running ganglion."""

    model: str | None
    flags: frozenset[str]
    build: InstalledBuild
    portable: PortableBuild

    @property
    def features(self) -> list[str]:
        """This CPU's features, in llama.cpp's names."""
        return sorted(name for name, flag in CPU_FLAGS.items() if flag in self.flags)

    @property
    def missing(self) -> list[str]:
        """What the build uses and this CPU lacks: it crashes here."""
        return missing_features(self.build.features, self.flags)

    @property
    def beyond_baseline(self) -> list[str]:
        """What the build uses beyond the portable baseline: it runs only on CPUs with them."""
        baseline = self.portable.baseline
        return [] if baseline is None else sorted(self.build.features - baseline)

    @property
    def verdict(self) -> tuple[Verdict, str]:
        build, fix = self.build, f"Rebuild it portable: {rebuild_command()}"
        if not build.installed:
            return "absent", (
                "llama-cpp-python is not installed, so this node cannot run the local neurons; "
                f"`ganglion local build` installs {self.portable.describe}"
            )
        if build.error:
            return "error", f"llama-cpp-python {build.version}: {build.error}. {fix}"
        if self.missing:
            return "error", (
                f"this llama.cpp build uses {', '.join(self.missing)}, which this CPU lacks: "
                f"it will crash here (SIGILL). {fix}"
            )
        if self.beyond_baseline:
            return "warn", (
                f"a native build: it uses {', '.join(self.beyond_baseline)} beyond the portable "
                "AVX2 baseline, so it runs only on CPUs that have them and cannot move to "
                "another machine (a native build also crashed on an AVX-512/AMX Xeon, the very "
                f"CPU that built it). {fix}"
            )
        cpus = "any x86-64 CPU with AVX2" if self.portable.baseline else "this kind of CPU"
        return "ok", f"portable: runs on {cpus}, and this CPU has everything it uses"

    def as_json(self) -> dict[str, Any]:
        verdict, message = self.verdict
        build = self.build
        return {
            "model": self.model,
            "features": self.features,
            "llama_cpp": {
                "installed": build.installed,
                "version": build.version,
                "features": sorted(build.features),
                "missing": self.missing,
                "beyond_baseline": self.beyond_baseline,
                "wheel": str(build.wheel) if build.wheel else None,
                "verdict": verdict,
                "message": message,
            },
        }
