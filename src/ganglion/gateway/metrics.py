"""Prometheus ``/metrics`` for the gateway (being written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["metrics"])
