"""The orchestrator's API: start a run, follow it, read the record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ganglion.errors import UnknownRun
from ganglion.fleet.neuron import Text
from ganglion.gateway.state import GatewayDep
from ganglion.orchestra.request import RunRequest
from ganglion.orchestra.view import RunView
from ganglion.wire import sse

router = APIRouter(prefix="/fleet/runs", tags=["runs"])


class NewRun(BaseModel):
    task: Text = Field(description="What to do, in words")
    model: Text | None = Field(default=None, description="Workers' model; default: most served")
    brain: Text | None = Field(default=None, description="Model that plans and synthesizes")
    policy: str = Field(default="speed", description="speed | round-robin | fastest")
    max_subtasks: int = Field(default=4, ge=2, le=32)
    decompose: str = Field(default="auto", description="auto | always | never")
    synthesis: str = Field(
        default="stitch", description="stitch (parts in order, default) | rewrite (brain rewrites)"
    )
    answer_tokens: int = Field(default=512, ge=64, le=8192, description="The answer's budget")


@router.post("", status_code=202, response_model=RunView)
async def start_run(new: NewRun, gateway: GatewayDep) -> dict[str, Any]:
    """Start a run; it goes on in the gateway. Follow it at ``/fleet/runs/{id}/events``."""
    run_id = await gateway.orchestra.start(RunRequest(**new.model_dump()))
    return await _view(gateway, run_id)


@router.get("", response_model=list[RunView])
async def list_runs(
    gateway: GatewayDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[dict[str, Any]]:
    return await gateway.orchestra.recent(limit)


@router.get("/{run_id}", response_model=RunView)
async def get_run(run_id: str, gateway: GatewayDep) -> dict[str, Any]:
    return await _view(gateway, run_id)


@router.post("/{run_id}/cancel", response_model=RunView)
async def cancel_run(run_id: str, gateway: GatewayDep) -> dict[str, Any]:
    """Stop a running run; unfinished delegations become ``cancelled``."""
    return await gateway.orchestra.cancel((await _view(gateway, run_id))["id"])


@router.get("/{run_id}/events")
async def follow_run(run_id: str, gateway: GatewayDep) -> StreamingResponse:
    """Server-sent events: ``run`` (the whole record), ``delegation`` (one changed),
    ``answer`` (synthesis text as it streams), ``done`` (the final record)."""
    view = await _view(gateway, run_id)

    async def events() -> AsyncIterator[str]:
        with gateway.orchestra.events.subscribe(view["id"]) as followed:
            # read again once subscribed: a run that ended meanwhile has no history left
            latest = await _view(gateway, view["id"]) if view["status"] == "running" else view
            if latest["status"] != "running":
                yield sse.json_event({"type": "done", "run": latest}, "done")
                return
            async for event in followed:
                yield sse.json_event(event, event["type"])

    return StreamingResponse(events(), media_type=sse.MEDIA_TYPE)


async def _view(gateway: GatewayDep, run_id: str) -> dict[str, Any]:
    view = None if "\x00" in run_id else await gateway.orchestra.view(run_id)
    if view is None:
        raise UnknownRun(f"no run {run_id!r}: see ganglion runs list")
    return view
