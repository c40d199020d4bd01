"""Discovery: neurons registered and removed by watching a source.

The config file's ``[[neuron]]`` tables are the simplest source (:class:`StaticDiscovery`):
each is registered at start, and one that does not answer yet is tried again every
``retry_s`` until it does. A name already registered at another URL is moved to the file's.
The file manages the neurons it lists (their ``origin`` is ``config``): one taken out of the
file is unregistered at the next start with a config file.

``ganglion serve --discover kubernetes`` lists the Services labelled
:data:`~ganglion.doctor.labels.NEURON_SELECTOR` (what ``ganglion enlist k3s`` writes), then
watches them: each becomes a neuron named ``k8s-<namespace>-<service>``, and goes when its
Service goes. A full list every ``resync_s`` heals missed watch events; a Service whose
server does not answer yet (the registry refuses unreachable neurons) is tried again every
``retry_s``. Discovery owns the neurons whose names carry its prefix and never touches others.

The API is reached through :mod:`ganglion.fleet.kube`: in-cluster (the pod's service account)
or from a kubeconfig (:func:`~ganglion.fleet.kube.load_cluster`). Errors are logged and retried
with backoff; they never stop the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from ganglion.config import Settings
from ganglion.doctor.labels import (
    API_ANNOTATION,
    NEURON_SELECTOR,
    NODE_ANNOTATION,
    PORT_ANNOTATION,
    URL_ANNOTATION,
)
from ganglion.errors import ConfigError, GanglionError, UnknownNeuron
from ganglion.fleet.kube import ApiError, Cluster, list_objects, load_cluster, watch_objects
from ganglion.fleet.neuron import NewNeuron
from ganglion.fleet.probes import cancel
from ganglion.fleet.registry import Registry
from ganglion.net import default_name, normalize_url
from ganglion.neurons.base import Dialect

log = logging.getLogger(__name__)

SYNC_CONCURRENCY = 64  # config-file neurons checked at once

PREFIX = "k8s-"
CLUSTER_DOMAIN = "cluster.local"
HOSTNAME_LABEL = "kubernetes.io/hostname"
MAX_BACKOFF_S = 30.0

Address = Literal["auto", "dns", "cluster-ip"]


class Discovery(Protocol):
    source: str
    """What it watches, as a person would name it (``config file``, ``kubernetes``)."""

    @property
    def synced(self) -> bool:
        """Whether it has read its source through once (``/readyz`` waits for that)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# what a Service asks for


@dataclass(frozen=True)
class Target:
    """The neuron one Service asks for."""

    name: str
    url: str
    api: Dialect | None
    node: str | None
    slots: int = 1


class NotANeuron(ValueError):
    """A labelled Service that does not say enough to become a neuron."""


def neuron_name(service: Mapping[str, Any]) -> str:
    meta = service.get("metadata") or {}
    return f"{PREFIX}{meta.get('namespace', 'default')}-{meta.get('name', '')}"


def service_target(service: Mapping[str, Any], *, address: Literal["dns", "cluster-ip"]) -> Target:
    """The neuron a Service asks for: the URL annotation, or ``http://HOST:PORT`` where HOST is
    the Service's DNS name or cluster IP (``address``) and PORT the port annotation or the
    first port; the dialect and node from their annotations (the node else from a
    ``kubernetes.io/hostname`` selector)."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    notes: Mapping[str, str] = meta.get("annotations") or {}
    name = neuron_name(service)
    url = notes.get(URL_ANNOTATION) or f"http://{_host(meta, spec, address)}:{_port(notes, spec)}"
    try:
        url = normalize_url(url)
    except GanglionError as error:
        raise NotANeuron(f"Service {name}: {error}") from None
    api = notes.get(API_ANNOTATION)
    if api is not None and api not in set(Dialect):
        choices = ", ".join(Dialect)
        raise NotANeuron(f"Service {name}: {API_ANNOTATION}={api!r} is not one of {choices}")
    node = notes.get(NODE_ANNOTATION) or (spec.get("selector") or {}).get(HOSTNAME_LABEL)
    return Target(name, url, Dialect(api) if api else None, node)


def _host(meta: Mapping[str, Any], spec: Mapping[str, Any], address: str) -> str:
    ip = spec.get("clusterIP")
    if address == "cluster-ip" and ip and ip != "None":
        return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else str(ip)
    return f"{meta.get('name')}.{meta.get('namespace', 'default')}.svc.{CLUSTER_DOMAIN}"


def _port(notes: Mapping[str, str], spec: Mapping[str, Any]) -> int:
    if PORT_ANNOTATION in notes:
        try:
            return int(notes[PORT_ANNOTATION])
        except ValueError:
            raise NotANeuron(
                f"{PORT_ANNOTATION}={notes[PORT_ANNOTATION]!r} is not a port"
            ) from None
    ports = spec.get("ports") or []
    if not ports:
        raise NotANeuron(f"the Service has no ports and no {PORT_ANNOTATION} annotation")
    return int(ports[0]["port"])


# the watch


class KubernetesDiscovery:
    """Registers labelled Services as neurons and removes them when they go."""

    source = "kubernetes"

    def __init__(
        self,
        registry: Registry,
        cluster: Cluster,
        *,
        namespace: str | None = None,
        address: Address = "auto",
        resync_s: float = 60.0,
        retry_s: float = 5.0,
        backoff_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.registry = registry
        self.cluster = cluster
        self.namespace = namespace
        self.address: Literal["dns", "cluster-ip"] = (
            ("dns" if cluster.in_cluster else "cluster-ip") if address == "auto" else address
        )
        self.resync_s, self.retry_s, self.backoff_s = resync_s, retry_s, backoff_s
        self.transport = transport
        self.path = f"/api/v1/namespaces/{namespace}/services" if namespace else "/api/v1/services"
        self.owned = f"{PREFIX}{namespace}-" if namespace else PREFIX
        self._wanted: dict[str, Target] = {}
        self._listed = False
        self._synced = False
        self._problems: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, registry: Registry, settings: Settings) -> KubernetesDiscovery:
        return cls(
            registry,
            load_cluster(),
            namespace=settings.discover_namespace,
            address=settings.discover_address,
            resync_s=settings.discover_resync_s,
            retry_s=settings.discover_retry_s,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("KubernetesDiscovery.start() first")
        return self._client

    async def start(self) -> None:
        self._client = self.cluster.client(self.transport)
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="ganglion-discovery-watch"),
            asyncio.create_task(self._retry_loop(), name="ganglion-discovery-retry"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel(task)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # the loops

    async def _watch_loop(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                await self._watch(
                    version, deadline=asyncio.get_running_loop().time() + self.resync_s
                )
            except ApiError as error:
                if error.code == 410:
                    log.info("discovery: watch expired (410 Gone); listing Services again")
                    continue
                failures += 1
                await self._pause(failures, str(error))
            except (httpx.HTTPError, ValueError, KeyError) as error:
                failures += 1
                await self._pause(failures, f"{type(error).__name__}: {error}")
            except Exception:  # a bug must not end discovery for good
                failures += 1
                log.exception("discovery: watching Kubernetes failed")
                await self._pause(failures, "unexpected error")

    async def _pause(self, failures: int, why: str) -> None:
        delay = min(MAX_BACKOFF_S, self.backoff_s * 2 ** (failures - 1))
        log.warning(
            "discovery: Kubernetes API at %s: %s; retrying in %.3g s",
            self.cluster.server,
            why,
            delay,
        )
        await asyncio.sleep(delay)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retry_s)
            try:
                names = set(self.registry_names())
                pending = [name for name in self._wanted if name not in names]
                if self._listed and pending:
                    await self._sync(pending)
            except Exception:  # a bug must not end the retries for good
                log.exception("discovery: retrying Services failed")

    # talking to the API

    async def _list(self) -> str:
        items, version = await list_objects(self.client, self.path, selector=NEURON_SELECTOR)
        wanted: dict[str, Target] = {}
        for service in items:
            if (target := self._target(service)) is not None:
                wanted[target.name] = target
        async with self._lock:
            self._wanted, self._listed = wanted, True
        await self._sync(set(wanted) | self.registry_names())
        self._synced = True
        return version

    @property
    def synced(self) -> bool:
        """Listed the Services once and registered (or queued for retry) what it found."""
        return self._synced

    async def _watch(self, version: str, *, deadline: float) -> None:
        """Follow events from ``version`` until ``deadline`` (then the caller lists again)."""
        events = watch_objects(
            self.client,
            self.path,
            selector=NEURON_SELECTOR,
            version=version,
            deadline=deadline,
            backoff_s=self.backoff_s,
        )
        async with contextlib.aclosing(events):
            async for event in events:
                await self._on_event(event.get("type"), event["object"])

    async def _on_event(self, kind: str | None, service: Mapping[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED"):
            name, target = neuron_name(service), self._target(service)
            async with self._lock:
                self._wanted.pop(name, None)
                if target is not None:
                    self._wanted[name] = target
            await self._sync([name])
        elif kind == "DELETED":
            name = neuron_name(service)
            async with self._lock:
                self._wanted.pop(name, None)
            await self._sync([name])

    def _target(self, service: Mapping[str, Any]) -> Target | None:
        try:
            return service_target(service, address=self.address)
        except NotANeuron as error:
            self._problem(neuron_name(service), f"{error}; skipped")
            return None

    # the registry

    def registry_names(self) -> set[str]:
        """The registered neurons discovery owns."""
        return {n.name for n in self.registry.neurons() if n.name.startswith(self.owned)}

    async def _sync(self, names: Collection[str]) -> None:
        async with self._lock:
            outcomes = await asyncio.gather(
                *(self._ensure(name) for name in names), return_exceptions=True
            )
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, Exception):  # a bug with one Service must not stop the rest
                log.error("discovery: %s: %s", name, outcome, exc_info=outcome)

    async def _ensure(self, name: str) -> None:
        """Make the registry hold what the Service ``name`` asks for (or nothing)."""
        want = self._wanted.get(name)
        have = next((n for n in self.registry.neurons() if n.name == name), None)
        if have is not None and (want is None or not _matches(want, have.url, have.api, have.node)):
            with contextlib.suppress(UnknownNeuron):
                await self.registry.remove(name)
            log.info("discovery: removed neuron %s (%s)", name, have.url)
            have = None
        if want is None or have is not None:
            self._problems.pop(name, None)
            return
        try:
            await self.registry.add(want.url, name=name, api=want.api, node=want.node)
        except GanglionError as error:
            self._problem(name, f"not registered yet ({error}); retrying every {self.retry_s:g} s")
            return
        self._problems.pop(name, None)
        log.info("discovery: registered neuron %s at %s", name, want.url)

    def _problem(self, name: str, message: str) -> None:
        """Log ``message`` about ``name`` once, not at every retry."""
        if self._problems.get(name) != message:
            self._problems[name] = message
            log.warning("discovery: %s: %s", name, message)


def _matches(want: Target, url: str, api: Dialect, node: str) -> bool:
    return (
        want.url == url
        and (want.api is None or want.api == api)
        and (want.node is None or want.node == node)
    )


CONFIG_ORIGIN = "config"
"""The ``origin`` of the neurons a config file registered."""


class StaticDiscovery:
    """Registers the neurons a config file lists, retrying those that do not answer yet.

    ``neurons`` is ``None`` when the gateway runs without a config file: then the neurons an
    earlier file registered stay. With a file, those it no longer lists are unregistered."""

    source = "config file"

    def __init__(
        self, registry: Registry, neurons: list[NewNeuron] | None, *, retry_s: float
    ) -> None:
        self.registry = registry
        self.retry_s = retry_s
        self._manages = neurons is not None
        self._pending = [_static_target(neuron) for neuron in neurons or []]
        self._problems: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._synced = False

    @property
    def synced(self) -> bool:
        """Went through the file's list once (a neuron not answering yet is retried)."""
        return self._synced

    async def start(self) -> None:
        if self._manages:
            await self._drop_unlisted()
        await self._sync()
        self._synced = True
        if self._pending:
            self._task = asyncio.create_task(self._retry_loop(), name="ganglion-static-retry")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _retry_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(self.retry_s)
            try:
                await self._sync()
            except Exception:  # a bug must not end the retries for good
                log.exception("config file neurons: retrying failed")

    async def _drop_unlisted(self) -> None:
        listed = {want.name for want in self._pending}
        for neuron in self.registry.neurons():
            if neuron.origin == CONFIG_ORIGIN and neuron.name not in listed:
                with contextlib.suppress(UnknownNeuron):  # another replica removed it first
                    await self.registry.remove(neuron.name)
                log.warning("config file: neuron %s is no longer listed: unregistered", neuron.name)

    async def _sync(self) -> None:
        """Register every listed neuron not registered as listed, :data:`SYNC_CONCURRENCY`
        at a time (each is checked over the network first); keep the ones that failed."""
        gate = asyncio.Semaphore(SYNC_CONCURRENCY)

        async def one(want: Target) -> bool:
            async with gate:
                return await self._register(want)

        done = await asyncio.gather(*(one(want) for want in self._pending))
        self._pending = [want for want, ok in zip(self._pending, done, strict=True) if not ok]

    async def _register(self, want: Target) -> bool:
        """Make the registry hold ``want`` as listed; False (and a warning) if not yet."""
        have = next((n for n in self.registry.neurons() if n.name == want.name), None)
        if have is not None and _matches(want, have.url, have.api, have.node):
            if have.origin != CONFIG_ORIGIN:  # registered by hand first: the file has it now
                await self.registry.adopt(want.name, CONFIG_ORIGIN)
            return True
        try:
            if have is not None:
                await self.registry.remove(want.name)
                log.info(
                    "config file: neuron %s moves from %s to %s", want.name, have.url, want.url
                )
            await self.registry.add(
                want.url,
                name=want.name,
                api=want.api,
                node=want.node,
                slots=want.slots,
                origin=CONFIG_ORIGIN,
            )
        except GanglionError as error:
            message = f"not registered yet ({error}); retrying every {self.retry_s:g} s"
            if self._problems.get(want.name) != message:
                self._problems[want.name] = message
                log.warning("config file: neuron %s: %s", want.name, message)
            return False
        log.info("config file: registered neuron %s at %s", want.name, want.url)
        return True


def _static_target(neuron: NewNeuron) -> Target:
    url = normalize_url(neuron.url)
    return Target(neuron.name or default_name(url), url, neuron.api, neuron.node, neuron.slots)


# the kinds of discovery

DiscoveryFactory = Callable[[Registry, Settings], Discovery]

KINDS: Mapping[str, DiscoveryFactory] = {"kubernetes": KubernetesDiscovery.from_settings}
"""Every kind of discovery ``ganglion serve --discover`` accepts."""


def make_discovery(kind: str, registry: Registry, settings: Settings) -> Discovery:
    """The discovery named ``kind`` (``kubernetes``), watching for ``registry``."""
    factory = KINDS.get(kind)
    if factory is None:
        raise ConfigError(f"unknown discovery {kind!r}: the choices are: {', '.join(KINDS)}")
    return factory(registry, settings)
