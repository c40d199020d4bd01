"""The Synapse monitor's web page, served by the gateway at ``/`` (being written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["monitor"])
