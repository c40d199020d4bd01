"""The fleet API: list, add, remove, suspend, resume and bench neurons; the nodes' doctor
reports."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ganglion.fleet.bench import bench_model
from ganglion.fleet.neuron import Neuron, NeuronView, NewNeuron, Text
from ganglion.fleet.placement import DoctorReport
from ganglion.gateway.state import Gateway, GatewayDep

router = APIRouter(prefix="/fleet", tags=["fleet"])


class BenchRequest(BaseModel):
    neurons: list[str] = Field(default_factory=list, description="Names; empty means all active")
    max_tokens: int | None = Field(default=None, ge=8, le=4096)


@router.get("/neurons")
async def list_neurons(gateway: GatewayDep) -> list[NeuronView]:
    return [neuron.view() for neuron in gateway.registry.neurons()]


@router.post("/neurons", status_code=201)
async def add_neuron(new: NewNeuron, gateway: GatewayDep) -> NeuronView:
    neuron = await gateway.registry.add(
        new.url, name=new.name, api=new.api, node=new.node, slots=new.slots
    )
    return neuron.view()


@router.get("/neurons/{name}")
async def get_neuron(name: str, gateway: GatewayDep) -> NeuronView:
    return gateway.registry.get(name).view()


@router.delete("/neurons/{name}", status_code=204)
async def remove_neuron(name: str, gateway: GatewayDep) -> Response:
    await gateway.registry.remove(name)
    return Response(status_code=204)


@router.post("/neurons/{name}/suspend")
async def suspend_neuron(name: str, gateway: GatewayDep) -> NeuronView:
    return (await gateway.registry.suspend(name)).view()


@router.post("/neurons/{name}/resume")
async def resume_neuron(name: str, gateway: GatewayDep) -> NeuronView:
    return (await gateway.registry.resume(name)).view()


@router.get("/nodes")
async def list_nodes(gateway: GatewayDep) -> list[dict[str, Any]]:
    """What each node's doctor said of its GPUs (``ganglion doctor --send``)."""
    return [report.as_json() for report in gateway.registry.nodes()]


@router.put("/nodes/{node}/doctor")
async def report_node(
    node: Annotated[Text, Path(max_length=200)], report: DoctorReport, gateway: GatewayDep
) -> dict[str, Any]:
    """Keep ``ganglion doctor --json`` from ``node``: a GPU there whose driver gives no CUDA,
    or a model there on the CPU, marks the neurons on that node."""
    return (await gateway.registry.report_node(node, report)).as_json()


@router.post("/bench", response_model=None)
async def bench(
    request: BenchRequest, gateway: GatewayDep, stream: bool = False
) -> list[dict[str, object]] | StreamingResponse:
    """Bench each model of the named neurons (all active ones by default).

    Nodes run in parallel (separate machines); on one node, one model of one neuron at a
    time, so neurons sharing a machine do not slow each other's measurement.
    With ``?stream=true`` the answer is NDJSON: ``{"event": "start", ...}`` before each model,
    ``{"event": "result", ...}`` after it, so a client can show progress.
    """
    registry = gateway.registry
    names = request.neurons or [n.name for n in registry.neurons() if n.is_active]
    neurons = [registry.get(name) for name in names]
    max_tokens = request.max_tokens or gateway.settings.bench_tokens
    events = _bench_events(gateway, neurons, max_tokens)
    if stream:
        lines = (json.dumps(event) + "\n" async for event in events)
        return StreamingResponse(lines, media_type="application/x-ndjson")
    return [event["result"] async for event in events if event["event"] == "result"]


def by_node(neurons: list[Neuron]) -> dict[str, list[Neuron]]:
    groups: dict[str, list[Neuron]] = {}
    for neuron in neurons:
        groups.setdefault(neuron.node, []).append(neuron)
    return groups


async def _bench_events(
    gateway: Gateway, neurons: list[Neuron], max_tokens: int
) -> AsyncIterator[dict[str, Any]]:
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def one_node(on_node: list[Neuron]) -> None:
        for neuron in on_node:
            for model in list(neuron.models):
                await queue.put({"event": "start", "neuron": neuron.name, "model": model})
                result = await bench_model(
                    gateway.registry, neuron, model, max_tokens, observer=gateway.metrics
                )
                await queue.put({"event": "result", "result": asdict(result)})

    async def all_of_them() -> None:
        try:
            await asyncio.gather(*(one_node(group) for group in by_node(neurons).values()))
        finally:
            await queue.put(None)

    yield {"event": "plan", "total": sum(len(n.models) for n in neurons)}
    task = asyncio.create_task(all_of_them())
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
