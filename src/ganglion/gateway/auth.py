"""API keys: who may use the gateway, and who may change the fleet (being written)."""

from __future__ import annotations

from fastapi import Request


async def user_access(request: Request) -> None:
    """Any valid key (user or admin) when keys are enforced; nothing on an open loopback bind."""


async def fleet_access(request: Request) -> None:
    """Reading the fleet needs a user key, changing it an admin key, when keys are enforced."""
