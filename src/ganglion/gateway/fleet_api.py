"""The fleet API: list, add, remove, suspend, resume and bench neurons; the nodes' doctor
reports."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from operator import attrgetter
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Discriminator, Field, Tag

from ganglion.errors import GanglionError
from ganglion.fleet.bench import bench_model
from ganglion.fleet.neuron import Neuron, NeuronView, NewNeuron, Text
from ganglion.fleet.placement import DoctorReport
from ganglion.fleet.status import NeuronStatus
from ganglion.gateway.errors import LIST_FORM, OBJECT_FORM
from ganglion.gateway.state import Gateway, GatewayDep
from ganglion.routing import same_model

router = APIRouter(prefix="/fleet", tags=["fleet"])

BULK_MAX = 10_000
BULK_CONCURRENCY = 64  # neurons checked at once while registering a list


class BenchRequest(BaseModel):
    neurons: list[str] = Field(default_factory=list, description="Names; empty means all active")
    max_tokens: int | None = Field(default=None, ge=8, le=4096)


@router.get("/neurons", response_model=list[NeuronView])
async def list_neurons(
    gateway: GatewayDep,
    status: Annotated[
        list[NeuronStatus] | None, Query(description="Only neurons in these statuses.")
    ] = None,
    node: Annotated[str | None, Query(description="Only the neurons on this node.")] = None,
    model: Annotated[str | None, Query(description="Only neurons serving this model.")] = None,
    offset: Annotated[int, Query(ge=0, description="Neurons to skip, for paging.")] = 0,
    limit: Annotated[
        int | None, Query(ge=1, le=BULK_MAX, description="At most this many; default all.")
    ] = None,
) -> Response:
    """The fleet's neurons in natural name order (``gpu-2`` before ``gpu-10``), filtered;
    ``X-Total-Count`` says how many matched before paging. Each neuron's view is encoded
    once and kept until it changes (:meth:`Neuron.view_json`): a thousand neurons list in a
    few milliseconds."""
    wanted = [
        neuron
        for neuron in gateway.registry.neurons()
        if (status is None or neuron.status in status)
        and (node is None or neuron.node == node)
        and (model is None or any(same_model(model, m) for m in neuron.models))
    ]
    wanted.sort(key=attrgetter("order"))
    end = None if limit is None else offset + limit
    return Response(
        b"[" + b",".join(neuron.view_json() for neuron in wanted[offset:end]) + b"]",
        media_type="application/json",
        headers={"X-Total-Count": str(len(wanted))},
    )


class Added(BaseModel):
    """One neuron of a bulk registration: its view when added, else why not."""

    url: str
    neuron: NeuronView | None = None
    error: str | None = None


NewNeurons = Annotated[
    Annotated[NewNeuron, Tag(OBJECT_FORM)]
    | Annotated[list[NewNeuron], Field(max_length=BULK_MAX), Tag(LIST_FORM)],
    Discriminator(lambda body: LIST_FORM if isinstance(body, list) else OBJECT_FORM),
]


@router.post("/neurons", status_code=201, response_model=NeuronView | list[Added])
async def add_neuron(
    new: NewNeurons,
    gateway: GatewayDep,
    response: Response,
) -> NeuronView | list[Added]:
    """Register one neuron, or a list of them at once (up to 10,000, checked
    :data:`BULK_CONCURRENCY` at a time). A list is answered per neuron, in its order: 201
    when all were added, else 207 with the reason for each that was not."""
    if isinstance(new, NewNeuron):
        return (await _add(gateway, new)).view()
    gate = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(item: NewNeuron) -> Added:
        async with gate:
            try:
                return Added(url=item.url, neuron=(await _add(gateway, item)).view())
            except GanglionError as error:
                return Added(url=item.url, error=str(error))

    added = list(await asyncio.gather(*(one(item) for item in new)))
    if any(result.error for result in added):
        response.status_code = 207
    return added


async def _add(gateway: Gateway, new: NewNeuron) -> Neuron:
    return await gateway.registry.add(
        new.url, name=new.name, api=new.api, node=new.node, slots=new.slots
    )


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
