"""The tables. The store is the record; live state (in-flight counts) lives in memory.

Migrations in ``migrations/versions`` create exactly these tables; a test checks that the
migrated database and this metadata agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ganglion.clock import utcnow


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: DateTime(timezone=True),
    }


class NeuronRow(Base):
    """A registered neuron. ``status`` is its liveness; never a job's outcome."""

    __tablename__ = "neurons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(String(500), unique=True)
    api: Mapped[str] = mapped_column(String(20))
    node: Mapped[str] = mapped_column(String(200))
    slots: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), default="active")
    suspended: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    origin: Mapped[str | None] = mapped_column(String(20), default=None)
    """Who registered it: ``config`` for a config file's ``[[neuron]]``; null for the API."""
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SpeedSampleRow(Base):
    """One measured request: from real traffic (``source='traffic'``) or ``ganglion bench``."""

    __tablename__ = "speed_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    neuron_id: Mapped[int] = mapped_column(ForeignKey("neurons.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20))
    prompt_tokens: Mapped[int | None] = mapped_column(default=None)
    cached_tokens: Mapped[int | None] = mapped_column(default=None)
    """Prompt tokens the neuron reported it found in its KV cache."""
    predicted_cached_tokens: Mapped[int | None] = mapped_column(default=None)
    """Prompt tokens the router predicted it to hold there (0: a predicted miss)."""
    output_tokens: Mapped[int | None] = mapped_column(default=None)
    prefill_s: Mapped[float | None] = mapped_column(Float, default=None)
    decode_s: Mapped[float | None] = mapped_column(Float, default=None)
    load_s: Mapped[float | None] = mapped_column(Float, default=None)
    ttft_s: Mapped[float | None] = mapped_column(Float, default=None)
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    tokens_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RunRow(Base):
    """One orchestrated task (filled by the orchestrator)."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    task: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    mode: Mapped[str | None] = mapped_column(String(20), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    brain: Mapped[str | None] = mapped_column(String(200), default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    policy: Mapped[str | None] = mapped_column(String(40), default=None)
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    baseline: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    owner: Mapped[str | None] = mapped_column(String(200), default=None)  # the replica carrying it
    lease_until: Mapped[float | None] = mapped_column(Float, default=None)  # Unix seconds


class DelegationRow(Base):
    """One subtask assigned to one neuron. Its status is the job's outcome, not the neuron's."""

    __tablename__ = "delegations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    subtask: Mapped[str] = mapped_column(Text)
    expected_tokens: Mapped[int | None] = mapped_column(default=None)
    neuron: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[str | None] = mapped_column(Text, default=None)
    tokens: Mapped[int | None] = mapped_column(default=None)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class NodeReportRow(Base):
    """What a node's doctor said of its GPUs (``ganglion doctor --send``), the latest only:
    :meth:`ganglion.fleet.placement.NodeGpus.as_json`."""

    __tablename__ = "node_reports"

    node: Mapped[str] = mapped_column(String(200), primary_key=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    reported_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyRow(Base):
    """An API key: only its hash is stored. ``prefix`` identifies it in listings."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
