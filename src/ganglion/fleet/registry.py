"""The fleet registry: every neuron, its live evidence, and the record in the store.

The registry is the only writer of neuron state. Probes and real requests feed it evidence
(:meth:`Registry.probe`, :meth:`Registry.record_success`, :meth:`Registry.record_failure`);
it classifies (:func:`ganglion.fleet.status.classify`) and persists what changed. Nodes'
doctor reports (:meth:`Registry.report_node`) tell it a GPU that contributes nothing to the
neurons on its node (:mod:`ganglion.fleet.placement`). Whoever
waits on a neuron can also wait on :meth:`Registry.lost`, which resolves when it goes
offline: a request in flight there need not wait out its whole timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from urllib.parse import urlsplit

import httpx

from ganglion.clock import utcnow
from ganglion.errors import (
    DuplicateNeuron,
    FleetError,
    NeuronError,
    NeuronUnreachable,
    UnknownNeuron,
)
from ganglion.fleet.neuron import Neuron, check_name
from ganglion.fleet.placement import (
    MAX_NODES,
    DoctorReport,
    NodeGpus,
    contributing_nothing,
    depends_on_vram_on_node,
)
from ganglion.fleet.speed import SpeedBook
from ganglion.fleet.status import Health, NeuronStatus, Thresholds, classify
from ganglion.fleet.writes import WriteBehind
from ganglion.net import default_name, normalize_url
from ganglion.neurons.base import Dialect, NeuronAdapter, ProbeResult, TokenStats
from ganglion.neurons.detect import adapter_for, detect_dialect
from ganglion.neurons.http import Connections
from ganglion.store import SpeedSample, Store
from ganglion.store.schema import NeuronRow, NodeReportRow

#: A probe asks everything (Ollama: ``/api/version``, ``/api/tags``, ``/api/ps``) on a
#: neuron's first success in a row (at start, and when it comes back), and the model list on
#: every this-many-th after it (which of them, by the neuron's id: a fleet registered at once
#: does not ask every list in the same round); the others are one request (``/api/ps``), plus
#: the model list when that shows a model loaded that the list lacks.
MODELS_EVERY = 6

AdapterFactory = Callable[[Dialect, str], NeuronAdapter]
Listener = Callable[[Neuron], None]
Reachable = Callable[[str, float], Awaitable[bool]]
"""``reachable(url, timeout_s)``: whether the neuron at ``url`` accepts a connection now."""


async def accepts_connections(url: str, timeout_s: float) -> bool:
    """Whether ``url``'s host accepts a TCP connection on its port within ``timeout_s``: a
    server too busy to answer still does (the kernel accepts for it), a cut link or a dead
    host does not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class Registry:
    """Every neuron in the fleet. Build with :meth:`open`; close with :meth:`aclose`."""

    def __init__(
        self,
        store: Store,
        *,
        limits: Thresholds | None = None,
        probe_timeout_s: float = 3.0,
        speed_alpha: float = 0.3,
        transport: httpx.AsyncBaseTransport | None = None,
        reachable: Reachable = accepts_connections,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.limits = limits or Thresholds()
        self.probe_timeout_s = probe_timeout_s
        self.speed_alpha = speed_alpha
        self.transport = transport
        self.reachable = reachable
        self.clock = clock
        self._neurons: dict[str, Neuron] = {}
        self._nodes: dict[str, NodeGpus] = {}
        self._lost: dict[str, asyncio.Future[str]] = {}
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self.writes = WriteBehind(store)
        # Every neuron shares one aiohttp session; a fake transport gets everything.
        self.connections = Connections() if transport is None else None

    def _adapter(self, api: Dialect, url: str) -> NeuronAdapter:
        return adapter_for(api, url, transport=self.transport, connections=self.connections)

    async def load(self) -> None:
        """Load the registered neurons from the store. Their status is re-earned by probes."""
        for row in await asyncio.to_thread(self.store.neurons):
            self._neurons[row.name] = await self._loaded(row)
        await self._load_nodes()

    async def _load_nodes(self) -> set[str]:
        """Read the nodes' doctor reports from the store; the nodes whose report changed."""
        rows = await asyncio.to_thread(self.store.node_reports)
        nodes = {row.node: NodeGpus.from_json(row.report) for row in rows}
        changed = {
            n for n in nodes.keys() | self._nodes.keys() if nodes.get(n) != self._nodes.get(n)
        }
        self._nodes = nodes
        return changed

    async def _loaded(self, row: NeuronRow) -> Neuron:
        """The neuron of ``row``, with its speed history."""
        neuron = self._from_row(row)
        for sample in await asyncio.to_thread(self.store.samples, row.id):
            stats = TokenStats(
                prompt_tokens=sample.prompt_tokens,
                output_tokens=sample.output_tokens,
                prefill_s=sample.prefill_s,
                decode_s=sample.decode_s,
                load_s=sample.load_s,
            )
            neuron.speeds.observe(sample.model, stats)
        return neuron

    async def sync(self) -> None:
        """Take in what other gateways sharing the store changed: neurons they registered or
        removed, and suspensions. Status and speed stay this gateway's own evidence."""
        async with self._lock:
            marks = {mark.name: mark for mark in await asyncio.to_thread(self.store.neuron_marks)}
            for name, neuron in list(self._neurons.items()):
                mark = marks.get(name)
                if mark is None or mark.id != neuron.id:  # removed (and maybe added again)
                    await self._forget(neuron)
            if marks.keys() - self._neurons.keys():  # rare: read their whole rows then
                for row in await asyncio.to_thread(self.store.neurons):
                    if row.name not in self._neurons:
                        neuron = self._neurons[row.name] = await self._loaded(row)
                        self._notify(neuron)
            for name, mark in marks.items():
                known = self._neurons.get(name)  # None: removed since the marks were read
                if known is not None and mark.suspended != known.health.suspended:
                    known.health.suspended = mark.suspended
                    await self._reclassify(known)
            await self._reclassify_nodes(await self._load_nodes())

    async def _forget(self, neuron: Neuron) -> None:
        del self._neurons[neuron.name]
        self._lost.pop(neuron.name, None)
        self.writes.forget(neuron.id)
        await neuron.adapter.aclose()
        neuron.status, neuron.reason = NeuronStatus.OFFLINE, "removed from the fleet"
        self._notify(neuron)

    def _from_row(self, row: NeuronRow, adapter: NeuronAdapter | None = None) -> Neuron:
        """The neuron of ``row``, speaking through ``adapter`` (a new one when not given)."""
        api = Dialect(row.api)
        health = Health(suspended=row.suspended)
        neuron = Neuron(
            id=row.id,
            name=row.name,
            url=row.url,
            api=api,
            node=row.node,
            slots=row.slots,
            origin=row.origin,
            models=list(row.models),
            adapter=self._adapter(api, row.url) if adapter is None else adapter,
            health=health,
            speeds=SpeedBook(alpha=self.speed_alpha),
            last_seen=row.last_seen,
        )
        neuron.status, neuron.reason = NeuronStatus(row.status), row.reason
        return neuron

    async def aclose(self) -> None:
        """Write what is pending to the store, then close every neuron's connections."""
        await self.writes.aclose()
        for neuron in self._neurons.values():
            await neuron.adapter.aclose()
        if self.connections is not None:
            await self.connections.aclose()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(neuron)`` whenever a neuron's status, models or speed change."""
        self._listeners.append(listener)

    # reading

    def neurons(self) -> list[Neuron]:
        return list(self._neurons.values())

    def get(self, name: str) -> Neuron:
        try:
            return self._neurons[name]
        except KeyError:
            known = ", ".join(sorted(self._neurons)) or "none registered"
            raise UnknownNeuron(
                f"no neuron named {name!r} (known: {known}); see ganglion neuron list"
            ) from None

    def nodes(self) -> list[NodeGpus]:
        """The nodes' doctor reports, by node."""
        return sorted(self._nodes.values(), key=lambda report: report.node)

    def lost(self, neuron: Neuron) -> asyncio.Future[str]:
        """A future that resolves, with the reason, once ``neuron`` is offline: whatever it
        still owes a request in flight will not come. Done already if it is offline now."""
        future = self._lost.get(neuron.name)
        if future is None or (future.done() and neuron.status is not NeuronStatus.OFFLINE):
            future = self._lost[neuron.name] = asyncio.get_running_loop().create_future()
        if neuron.status is NeuronStatus.OFFLINE and not future.done():
            future.set_result(neuron.reason or "offline")
        return future

    # changing the fleet

    async def add(
        self,
        url: str,
        *,
        name: str | None = None,
        api: Dialect | None = None,
        node: str | None = None,
        slots: int = 1,
        origin: str | None = None,
    ) -> Neuron:
        """Register the neuron at ``url`` after checking that it answers in its dialect.
        ``origin`` says who asked (``config`` for a config file; ``None``, the API)."""
        url = normalize_url(url)
        name = name or default_name(url)
        try:
            check_name(name)
        except ValueError as error:
            raise FleetError(f"neuron name {name!r} {error}") from None
        self._check_unique(name, url)  # before the network: a mistake fails at once
        # outside the lock: adds run in parallel
        probe, adapter = await self._first_probe(url, api)
        try:
            async with self._lock:
                self._check_unique(name, url)  # another add may have taken it meanwhile
                row = NeuronRow(
                    name=name,
                    url=url,
                    api=probe.dialect.value,
                    node=node or urlsplit(url).hostname or "unknown",
                    slots=slots,
                    origin=origin,
                    models=probe.models or [],
                    status=NeuronStatus.ACTIVE.value,
                    last_seen=utcnow(),
                )
                row = await asyncio.to_thread(self.store.add_neuron, row)
                neuron = self._from_row(row, adapter)
                adapter = None  # the neuron's own now
                neuron.loaded, neuron.memory = probe.loaded, probe.memory
                # That probe asked everything: it is the first success in a row, and the
                # prober's next one is a heartbeat, not the same three requests again.
                neuron.health.probe_succeeded(self.limits)
                neuron.health.probed_at = self.clock()
                self._neurons[name] = neuron
        finally:
            if adapter is not None:  # not registered after all
                await adapter.aclose()
        self._notify(neuron)
        return neuron

    def _check_unique(self, name: str, url: str) -> None:
        for other in self._neurons.values():
            if other.name == name:
                raise DuplicateNeuron(
                    f"a neuron named {name!r} is already registered ({other.url}): "
                    "choose another --name, or remove it first (ganglion neuron rm NAME)"
                )
            if other.url == url:
                raise DuplicateNeuron(
                    f"{url} is already registered as {other.name!r}: "
                    "remove it first (ganglion neuron rm NAME) to register it again"
                )

    async def _first_probe(
        self, url: str, api: Dialect | None
    ) -> tuple[ProbeResult, NeuronAdapter | None]:
        """What a full probe of ``url`` saw, and, when ``api`` is given, the adapter that asked:
        the neuron keeps it once registered, with its kept-alive connection."""
        if api is None:
            _, result = await detect_dialect(
                url,
                transport=self.transport,
                timeout=httpx.Timeout(self.probe_timeout_s),
                connections=self.connections,
            )
            return result, None
        adapter = self._adapter(api, url)
        try:
            return await asyncio.wait_for(adapter.probe(), self.probe_timeout_s), adapter
        except TimeoutError:
            await adapter.aclose()
            raise NeuronUnreachable(
                f"{url} did not answer within {self.probe_timeout_s:.0f} s: check that the "
                "server is running and reachable from the gateway"
            ) from None
        except BaseException:
            await adapter.aclose()
            raise

    async def report_node(self, node: str, report: DoctorReport) -> NodeGpus:
        """Keep what ``node``'s doctor said of its GPUs, and judge the neurons on it again."""
        if node not in self._nodes and len(self._nodes) >= MAX_NODES:
            raise FleetError(
                f"the gateway keeps doctor reports for at most {MAX_NODES} nodes; {node!r} "
                "would be one more"
            )
        gpus = NodeGpus.from_report(node, report, utcnow())
        row = NodeReportRow(node=node, report=gpus.as_json(), reported_at=gpus.reported_at)
        await asyncio.to_thread(self.store.set_node_report, row)
        self._nodes[node] = gpus
        await self._reclassify_nodes({node})
        return gpus

    async def _reclassify_nodes(self, nodes: set[str]) -> None:
        for neuron in self.neurons():
            if neuron.node in nodes:
                await self._reclassify(neuron)

    async def remove(self, name: str) -> None:
        async with self._lock:
            neuron = self.get(name)
            await asyncio.to_thread(self.store.remove_neuron, name)
            await self._forget(neuron)

    async def adopt(self, name: str, origin: str | None) -> None:
        """Record that ``origin`` (``config``) now manages the neuron ``name``."""
        neuron = self.get(name)
        await asyncio.to_thread(self.store.update_neuron, name, origin=origin)
        neuron.origin = origin

    async def suspend(self, name: str) -> Neuron:
        neuron = self.get(name)
        neuron.health.suspended = True
        await asyncio.to_thread(self.store.update_neuron, name, suspended=True)
        await self._reclassify(neuron)
        return neuron

    async def resume(self, name: str) -> Neuron:
        neuron = self.get(name)
        neuron.health.suspended = False
        await asyncio.to_thread(self.store.update_neuron, name, suspended=False)
        await self.probe(neuron)
        return self.get(name)  # UnknownNeuron if it was removed meanwhile

    # evidence

    async def probe(self, neuron: Neuron) -> None:
        """Check liveness without loading or evicting any model."""
        if neuron.health.suspended:
            await self._reclassify(neuron)
            return
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                result = await self._ask(neuron)
        except TimeoutError:
            neuron.health.probed_at = self.clock()
            if neuron.in_flight and await self.reachable(neuron.url, self.probe_timeout_s):
                # Busy is not dead: some servers (llama-cpp-python) hold even /v1/models
                # until the running answer ends, but they still accept connections. A
                # neuron that does not (a cut link, a host gone) counts, busy or not.
                return
            neuron.health.probe_failed(
                f"no answer within {self.probe_timeout_s:.0f} s at {neuron.url}", self.limits
            )
        except NeuronError as error:
            neuron.health.probed_at = self.clock()
            neuron.health.probe_failed(str(error), self.limits)
        else:
            neuron.health.probed_at = self.clock()
            neuron.health.probe_succeeded(self.limits)
            neuron.last_seen = utcnow()
            neuron.loaded, neuron.memory = result.loaded, result.memory
            if result.models is not None and result.models != neuron.models:
                neuron.models = result.models
                await asyncio.to_thread(self.store.update_neuron, neuron.name, models=neuron.models)
        await self._reclassify(neuron)

    @staticmethod
    async def _ask(neuron: Neuron) -> ProbeResult:
        """One probe of ``neuron``: all of it on a first success in a row; else liveness,
        with the model list when :data:`MODELS_EVERY` says, or when a model is loaded that
        the list lacks (pulled since: asked for at once)."""
        adapter, successes = neuron.adapter, neuron.health.probe_successes
        if successes == 0:
            return await adapter.probe()
        result = await adapter.probe(models=False)
        due = (successes + neuron.id) % MODELS_EVERY == 0
        if result.models is None and (
            due or any(m not in neuron.models for m in result.loaded or ())
        ):
            listed = [model.name for model in await adapter.list_models()]
            result = replace(result, models=listed)
        return result

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(neuron) for neuron in self.neurons()))

    async def record_success(
        self,
        neuron: Neuron,
        model: str,
        stats: TokenStats,
        *,
        source: str = "traffic",
        predicted_cached: int | None = None,
    ) -> None:
        """A request completed: proof of life, and a speed sample (with the prompt tokens
        the router predicted the neuron to hold in its cache, when it routed one)."""
        neuron.health.request_completed(self.clock())
        neuron.last_seen = utcnow()
        if neuron.loaded is not None and model not in neuron.loaded:
            neuron.loaded = [*neuron.loaded, model]  # it answered, so it is in memory now
        neuron.speeds.observe(model, stats)
        self.writes.add(SpeedSample(neuron.id, model, source, stats, predicted_cached))
        await self._reclassify(neuron, changed=True, speeds_only=True)

    async def record_failure(self, neuron: Neuron, reason: str) -> None:
        """A request failed. Errors may make a neuron ``degraded``; only probes make it offline."""
        neuron.health.request_failed(self.clock(), reason)
        await self._reclassify(neuron)

    @asynccontextmanager
    async def track(self, neuron: Neuron) -> AsyncIterator[Neuron]:
        """Count a request in flight on ``neuron`` while the block runs (:meth:`started`,
        then :meth:`ended`)."""
        self.started(neuron)
        try:
            yield neuron
        finally:
            self.ended(neuron)

    def started(self, neuron: Neuron) -> None:
        """A request is in flight on ``neuron`` until :meth:`ended`."""
        neuron.in_flight += 1
        self._notify(neuron)

    def ended(self, neuron: Neuron) -> None:
        """A request counted by :meth:`started` ended, either way."""
        neuron.in_flight -= 1
        self._notify(neuron)

    def _idle_gpu(self, neuron: Neuron) -> str | None:
        report = self._nodes.get(neuron.node)
        vram = depends_on_vram_on_node(neuron.memory, report) and any(
            where.vram_bytes > 0
            for other in self._neurons.values()
            if other.node == neuron.node
            for where in (other.memory or {}).values()
        )
        return contributing_nothing(
            neuron.node, neuron.memory, neuron.speeds.by_model(), report, vram
        )

    async def _reclassify(
        self, neuron: Neuron, *, changed: bool = False, speeds_only: bool = False
    ) -> None:
        """Classify ``neuron`` again, and tell the listeners if anything changed.
        ``speeds_only``: of what the idle-GPU verdict reads, only the speeds changed (a
        request's success), and they count only against a node's measured bandwidth: the
        verdict stands otherwise, until the next probe judges it again."""
        report = self._nodes.get(neuron.node)
        judged = not speeds_only or (report is not None and bool(report.bandwidth_gbps))
        idle_gpu = self._idle_gpu(neuron) if judged else neuron.idle_gpu
        if idle_gpu != neuron.idle_gpu:
            neuron.idle_gpu, changed = idle_gpu, True
        speeds = neuron.speeds
        if (
            speeds_only
            and neuron.status is NeuronStatus.ACTIVE
            and idle_gpu is None
            and not neuron.health.suspended
            and not self.limits.too_slow(speeds.speed(), speeds.baseline())
        ):
            # The usual success: judged active before, and of what classify reads only the
            # speeds changed since (errors only age; a probe, a failure or a suspension
            # judges again at once).
            status, reason = NeuronStatus.ACTIVE, None
        else:
            status, reason = classify(
                neuron.health,
                now=self.clock(),
                speed=speeds.speed(),
                baseline=speeds.baseline(),
                limits=self.limits,
                idle_gpu=idle_gpu,
            )
        known = neuron.name in self._neurons
        if (status, reason) != (neuron.status, neuron.reason):
            neuron.status, neuron.reason = status, reason
            changed = True
            if status is NeuronStatus.OFFLINE and neuron.name in self._lost:
                self.lost(neuron)  # resolves it: requests waiting there give up now
            if known:  # written at once, with the last-seen time
                values: dict[str, object] = {"status": status.value, "reason": reason}
                if neuron.last_seen:
                    values["last_seen"] = neuron.last_seen
                self.writes.update_neuron(neuron.id, values)
        elif neuron.last_seen and known:  # written within a while
            self.writes.seen(neuron.id, neuron.last_seen)
        if changed:
            self._notify(neuron)

    def _notify(self, neuron: Neuron) -> None:
        for listener in self._listeners:
            listener(neuron)
