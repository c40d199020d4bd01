"""``GET /fleet/events``: live fleet changes as server-sent events (being written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/fleet", tags=["monitor"])
