"""A GPU present but contributing nothing: the seed's nouveau lesson, where a box had a GPU and
Ollama silently ran every model on the CPU.

The evidence, per neuron, first found wins:

* **VRAM** (Ollama ``/api/ps``): a loaded model's ``size_vram`` below its ``size`` is partly or
  wholly on the CPU. Partly proves a GPU; wholly (``size_vram`` 0) counts only where the node
  is known to have one, since a CPU-only server says 0 too: from the node's doctor report, or
  another model on the node that is in VRAM.
* **the node's doctor report** (``ganglion doctor --send``): a GPU whose driver gives no CUDA
  (nouveau, a wrong or broken driver) contributes nothing to any neuron on the node, unless a
  model on the node is in VRAM now (then the report predates the fix).
* **speed**: decoding reads the whole model once per token, so the GPU's peak memory bandwidth
  (from CUDA, in the doctor's report) over the model's size bounds its decode speed. Engines
  reach a third to four fifths of that on large models and less on small ones; a neuron below
  :data:`SLOW_FRACTION` of it is not decoding on that GPU.

Each reason ends by pointing to ``ganglion doctor`` on the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ganglion.neurons.base import ModelMemory

SLOW_FRACTION = 0.05
"""Below this share of the bandwidth-bound decode speed, the GPU is not doing the decoding."""
MAX_NODES = 1024
"""The most nodes whose doctor reports the gateway keeps."""


class _Reported(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReportedLive(_Reported):
    state: str | None = None
    why: str = ""
    cuda_ok: bool | None = None
    devices: list[dict[str, Any]] = Field(default_factory=list)


class ReportedGpu(_Reported):
    name: str
    driver_in_use: str | None = None
    live: ReportedLive | None = None


class DoctorReport(_Reported):
    """``ganglion doctor --json`` as the gateway reads it: ``PUT /fleet/nodes/{node}/doctor``.
    Only what placement needs; the rest is ignored."""

    gpus: list[ReportedGpu] = Field(default_factory=list)
    live: ReportedLive | None = None


@dataclass(frozen=True)
class NodeGpus:
    """What a node's doctor report says of its NVIDIA GPUs: ``trouble`` is why they contribute
    nothing (``None`` when they work, or nothing is known against them); ``bandwidth_gbps`` the
    fastest one's peak memory bandwidth, from CUDA."""

    node: str
    gpus: tuple[str, ...]
    cuda_ok: bool | None
    trouble: str | None
    bandwidth_gbps: float | None
    reported_at: datetime

    @classmethod
    def from_report(cls, node: str, report: DoctorReport, now: datetime) -> NodeGpus:
        live = report.live or ReportedLive()
        trouble = next(
            (
                f"{gpu.name}: {gpu.live.why}"
                for gpu in report.gpus
                if gpu.live and gpu.live.state in ("wrong", "broken")
            ),
            None,
        )
        if trouble is None and report.gpus and live.cuda_ok is False:
            trouble = live.why
        speeds = [d["bandwidth_gbps"] for d in live.devices if d.get("bandwidth_gbps")]
        names = tuple(gpu.name for gpu in report.gpus)
        return cls(node, names, live.cuda_ok, trouble, max(speeds, default=None), now)

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "gpus": list(self.gpus),
            "cuda_ok": self.cuda_ok,
            "trouble": self.trouble,
            "bandwidth_gbps": self.bandwidth_gbps,
            "reported_at": self.reported_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeGpus:
        return cls(
            data["node"],
            tuple(data["gpus"]),
            data["cuda_ok"],
            data["trouble"],
            data["bandwidth_gbps"],
            datetime.fromisoformat(data["reported_at"]),
        )


def _gb(size: int) -> str:
    return "0" if size == 0 else f"{size / 1e9:.1f}"


def _vram(memory: Mapping[str, ModelMemory], gpu_known: bool) -> str | None:
    for model, where in sorted(memory.items()):
        if not where.on_cpu or (where.vram_bytes == 0 and not gpu_known):
            continue
        wholly = "on CPU" if where.vram_bytes == 0 else "partly on CPU"
        amounts = f"{_gb(where.vram_bytes)} of {_gb(where.size_bytes)} GB"
        return f"model {wholly}: {amounts} in VRAM ({model})"
    return None


def _slow(
    memory: Mapping[str, ModelMemory], speeds: Mapping[str, float], bandwidth_gbps: float
) -> str | None:
    for model, speed in sorted(speeds.items()):
        where = memory.get(model) or memory.get(f"{model}:latest")  # as /api/ps names it
        if where is None or where.size_bytes <= 0:
            continue
        bound = bandwidth_gbps * 1e9 / where.size_bytes
        if speed < SLOW_FRACTION * bound:
            return (
                f"decoding {model} at {speed:.1f} tok/s, far below what its node's "
                f"{bandwidth_gbps:.0f} GB/s GPU gives a {_gb(where.size_bytes)} GB model "
                f"(up to {bound:.0f} tok/s): is it on the CPU?"
            )
    return None


def depends_on_vram_on_node(
    memory: Mapping[str, ModelMemory] | None, report: NodeGpus | None
) -> bool:
    """Whether :func:`contributing_nothing` needs its ``vram_on_node`` here: only for a model
    wholly or partly on the CPU, or a doctor report that found trouble. (Finding it out walks
    every neuron on the node: a thousand on one host would make each probe cost a thousand.)"""
    on_cpu = any(where.on_cpu for where in (memory or {}).values())
    return on_cpu or (report is not None and bool(report.trouble))


def contributing_nothing(
    node: str,
    memory: Mapping[str, ModelMemory] | None,
    speeds: Mapping[str, float],
    report: NodeGpus | None,
    vram_on_node: bool,
) -> str | None:
    """Why the GPU of ``node`` contributes nothing to a neuron there, or ``None``. ``memory``
    is where its loaded models are, ``speeds`` its decode speed per model, ``report`` the
    node's doctor report, ``vram_on_node`` whether any model on the node is in VRAM."""
    gpu_known = vram_on_node or bool(report and report.gpus)
    reason = _vram(memory or {}, gpu_known)
    if reason is None and report is not None and report.trouble and not vram_on_node:
        reason = f"GPU present but contributing nothing: {report.trouble}"
    if reason is None and report is not None and report.bandwidth_gbps:
        reason = _slow(memory or {}, speeds, report.bandwidth_gbps)
    return None if reason is None else f"{reason}; run `ganglion doctor` on {node}"
