"""``/healthz`` and ``/readyz``: what a container runtime or Kubernetes asks before it
restarts a gateway or sends it traffic.

- ``GET /healthz`` answers 200 while the process serves HTTP at all: a liveness probe.
- ``GET /readyz`` answers 200 when this replica can do its work, else 503, and says which
  check failed: the store answers, its schema is at this release's newest migration, and
  every discovery (the config file's neurons, ``--discover kubernetes``) has read its source
  through once.

Neither needs an API key (probes carry none), neither is counted in ``/metrics``, and
neither talks to a neuron: a fleet that is down leaves its gateway ready, since the gateway
can still say so. The answers name failing checks in words of our own; the database's own
message, which may name hosts, goes to the log only, once each time it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine

from ganglion.errors import StoreError
from ganglion.fleet.discovery import Discovery
from ganglion.gateway.state import Gateway
from ganglion.store.db import schema_revisions

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

STORE_TIMEOUT_S = 3.0
"""How long ``/readyz`` waits for the store; a probe's own timeout should be longer."""

STARTING = "the gateway is still starting"
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class Alive(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    """Each check's problem in one line, or ``None`` when it passes."""

    ready: bool
    store: str | None = None
    migrations: str | None = None
    discovery: str | None = None


class StoreCheck:
    """Reads the store's schema revision, off the event loop and within a time limit, and
    logs the database's own reason for a failure when it changes."""

    def __init__(self, timeout_s: float = STORE_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._logged: str | None = None

    async def __call__(self, engine: Engine) -> tuple[str | None, str | None]:
        """``(store problem, migrations problem)``, each ``None`` when it passes."""
        try:
            current, head = await asyncio.wait_for(
                asyncio.to_thread(schema_revisions, engine), self.timeout_s
            )
        except TimeoutError:
            return f"the store did not answer within {self.timeout_s:g} s", None
        except StoreError as error:
            self._log(str(error))
            return "the store does not answer (the gateway's log says why)", None
        self._log(None)
        if current != head:
            return None, f"the store's schema is at {current or 'none'}, this gateway needs {head}"
        return None, None

    def _log(self, reason: str | None) -> None:
        if reason != self._logged:
            if reason is not None:
                log.warning("readyz: %s", reason)
            else:
                log.info("readyz: the store answers again")
            self._logged = reason


def discovery_problem(discoveries: Sequence[Discovery] | None) -> str | None:
    if discoveries is None:
        return STARTING
    waiting = [each.source for each in discoveries if not each.synced]
    if waiting:
        return f"not synced yet: {', '.join(waiting)}"
    return None


@router.get("/healthz", response_model=Alive)
async def healthz() -> Alive:
    """200 while the gateway process serves HTTP (liveness). Needs no API key."""
    return Alive()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """200 when the store answers at the newest schema and discovery has synced once; 503
    with the failing checks otherwise (readiness). Needs no API key; touches no neuron."""
    check: StoreCheck = request.app.state.store_check
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    store, migrations = (
        (STARTING, STARTING) if gateway is None else await check(gateway.store.engine)
    )
    discovery = discovery_problem(getattr(request.app.state, "discoveries", None))
    ready = store is None and migrations is None and discovery is None
    body = Readiness(ready=ready, store=store, migrations=migrations, discovery=discovery)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
