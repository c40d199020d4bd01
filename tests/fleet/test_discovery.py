"""Kubernetes discovery against a fake API server on loopback that speaks list and watch,
with real ``ganglion sim`` neurons behind the Services."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from ganglion.config import Settings
from ganglion.doctor.labels import (
    API_ANNOTATION,
    NEURON_LABELS,
    NODE_ANNOTATION,
    PORT_ANNOTATION,
    URL_ANNOTATION,
)
from ganglion.errors import ConfigError
from ganglion.fleet.discovery import (
    KubernetesDiscovery,
    NotANeuron,
    make_discovery,
    service_target,
)
from ganglion.fleet.kube import Cluster, load_cluster, load_kubeconfig
from ganglion.fleet.registry import Registry
from ganglion.neurons.base import Dialect
from ganglion.store import Store
from tests.conftest import Proc, Spawner, free_port, need, run_cli

NAMESPACE = "ganglion"
Json = dict[str, Any]

# the fake Kubernetes API


def service(
    name: str,
    url: str | None = None,
    *,
    namespace: str = NAMESPACE,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ports: tuple[int, ...] = (11434,),
    cluster_ip: str = "10.43.0.10",
    selector: dict[str, str] | None = None,
) -> Json:
    notes = {API_ANNOTATION: "ollama"} | (annotations or {})
    if url:
        notes[URL_ANNOTATION] = url
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": NEURON_LABELS if labels is None else labels,
            "annotations": notes,
        },
        "spec": {
            "clusterIP": cluster_ip,
            "selector": selector or {"app.kubernetes.io/name": "ollama"},
            "ports": [{"name": f"p{port}", "port": port} for port in ports],
        },
    }


def gone() -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "too old resource version",
        "reason": "Expired",
        "code": 410,
    }


def matches(selector: str, labels: dict[str, str]) -> bool:
    wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
    return all(labels.get(key) == value for key, value in wanted.items())


class FakeKubernetes:
    """Services over HTTP(S) on 127.0.0.1: ``GET .../services`` lists, ``?watch=1`` streams
    newline-delimited events (replayed from ``resourceVersion``, as the real API does)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, token: str | None = None) -> None:
        self.token = token
        self.services: dict[tuple[str, str], Json] = {}
        self.version = 100
        self.log: list[tuple[int, Json]] = []
        self.lists = 0
        self.watches = 0
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.fail_lists = 0
        self.gone_before = 0
        self.streams: list[queue.Queue[Json | None]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubernetes:
        self.thread.start()
        return self

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    # what the test controls

    def put(self, svc: Json, *, announce: bool = True) -> None:
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        with self.lock:
            kind = "MODIFIED" if key in self.services else "ADDED"
            self.version += 1
            svc["metadata"]["resourceVersion"] = str(self.version)
            self.services[key] = svc
            if announce:
                self._emit({"type": kind, "object": svc})

    def delete(self, namespace: str, name: str, *, announce: bool = True) -> None:
        with self.lock:
            svc = self.services.pop((namespace, name))
            self.version += 1
            svc["metadata"]["resourceVersion"] = str(self.version)
            if announce:
                self._emit({"type": "DELETED", "object": svc})

    def expire(self) -> None:
        """Send every open watch an ERROR 410 event (its resourceVersion was compacted)."""
        with self.lock:
            for stream in self.streams:
                stream.put({"type": "ERROR", "object": gone()})

    def end_watches(self) -> None:
        with self.lock:
            for stream in self.streams:
                stream.put(None)

    def _emit(self, event: Json) -> None:
        self.log.append((self.version, event))
        for stream in self.streams:
            stream.put(event)

    # what the handler asks

    def listing(self, namespace: str | None, selector: str) -> Json:
        with self.lock:
            items = [s for s in self.services.values() if self._wanted(s, namespace, selector)]
            return {
                "kind": "ServiceList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.version)},
                "items": items,
            }

    def subscribe(self, since: int) -> queue.Queue[Json | None] | None:
        """A stream of events after ``since``, or ``None`` when that version is gone."""
        with self.lock:
            self.watches += 1
            if since < self.gone_before:
                return None
            stream: queue.Queue[Json | None] = queue.Queue()
            for version, event in self.log:
                if version > since:
                    stream.put(event)
            self.streams.append(stream)
            return stream

    def unsubscribe(self, stream: queue.Queue[Json | None]) -> None:
        with self.lock:
            self.streams.remove(stream)

    @staticmethod
    def _wanted(svc: Json, namespace: str | None, selector: str) -> bool:
        meta = svc["metadata"]
        in_namespace = namespace is None or meta["namespace"] == namespace
        return in_namespace and matches(selector, meta.get("labels") or {})


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handlers
    fake: FakeKubernetes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        fake.paths.append(url.path)
        fake.auth.append(self.headers.get("Authorization"))
        if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
            return self._json(401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
        parts = url.path.strip("/").split("/")
        if parts == ["api", "v1", "services"]:
            namespace = None
        elif (
            len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "services"
        ):
            namespace = parts[3]
        else:
            return self._json(404, {"kind": "Status", "code": 404, "message": "not found"})
        selector = query.get("labelSelector", "")
        if query.get("watch") in ("1", "true"):
            return self._watch(namespace, selector, query)
        fake.lists += 1
        if fake.fail_lists > 0:
            fake.fail_lists -= 1
            return self._json(500, {"kind": "Status", "code": 500, "message": "etcd is sad"})
        return self._json(200, fake.listing(namespace, selector))

    def _json(self, code: int, body: Json) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, namespace: str | None, selector: str, query: dict[str, str]) -> None:
        fake = self.server.fake
        stream = fake.subscribe(int(query.get("resourceVersion") or 0))
        if stream is None:
            return self._json(410, gone())
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            while not fake.closed.is_set() and time.monotonic() < deadline:
                try:
                    event = stream.get(timeout=0.05)
                except queue.Empty:
                    continue
                if event is None:
                    break
                if event["type"] != "ERROR" and not fake._wanted(
                    event["object"], namespace, selector
                ):
                    continue
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()
                if event["type"] == "ERROR":
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            fake.unsubscribe(stream)


# fixtures


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    api = FakeKubernetes().start()
    yield api
    api.close()


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Proc]]:
    spawner = Spawner(tmp_path_factory.mktemp("sims"))
    try:
        yield [spawner.sim(200, model="sim-a"), spawner.sim(200, model="sim-b")]
    finally:
        spawner.close()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = await asyncio.to_thread(Store.open, f"sqlite:///{tmp_path / 'fleet.db'}")
    fleet = Registry(store, probe_timeout_s=2.0)
    await fleet.load()
    yield fleet
    await fleet.aclose()
    store.close()


@asynccontextmanager
async def discovering(
    registry: Registry, api: FakeKubernetes, **options: Any
) -> AsyncIterator[KubernetesDiscovery]:
    settings: dict[str, Any] = {"retry_s": 0.2, "backoff_s": 0.05, "resync_s": 60.0}
    discovery = KubernetesDiscovery(registry, Cluster(api.url), **(settings | options))
    await discovery.start()
    try:
        yield discovery
    finally:
        await discovery.stop()


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(0.05)


def names(registry: Registry) -> set[str]:
    return set(urls(registry))


def urls(registry: Registry) -> dict[str, str]:
    return {neuron.name: neuron.url for neuron in registry.neurons()}


# deriving the neuron from a Service


def test_the_name_is_namespaced_and_the_address_follows_the_setting() -> None:
    svc = service("ollama-gpu-a", annotations={PORT_ANNOTATION: "11434"})
    dns = service_target(svc, address="dns")
    assert dns.name == "k8s-ganglion-ollama-gpu-a"
    assert dns.url == "http://ollama-gpu-a.ganglion.svc.cluster.local:11434"
    assert dns.api is Dialect.OLLAMA
    assert service_target(svc, address="cluster-ip").url == "http://10.43.0.10:11434"


def test_the_first_port_serves_when_no_port_is_annotated() -> None:
    svc = service("vllm", ports=(8000, 9000), annotations={API_ANNOTATION: "openai"})
    target = service_target(svc, address="cluster-ip")
    assert target.url == "http://10.43.0.10:8000"
    assert target.api is Dialect.OPENAI


def test_headless_and_ipv6_services_get_a_usable_host() -> None:
    headless = service("a", cluster_ip="None")
    assert service_target(headless, address="cluster-ip").url.startswith("http://a.ganglion.svc.")
    v6 = service("b", cluster_ip="fd00:43::10")
    assert service_target(v6, address="cluster-ip").url == "http://[fd00:43::10]:11434"


def test_the_url_annotation_wins_and_the_node_comes_from_annotation_or_selector() -> None:
    svc = service("a", "http://127.0.0.1:9/", annotations={NODE_ANNOTATION: "gpu-box"})
    target = service_target(svc, address="dns")
    assert (target.url, target.node) == ("http://127.0.0.1:9", "gpu-box")
    pinned = service("b", selector={"kubernetes.io/hostname": "cpu-box"})
    assert service_target(pinned, address="dns").node == "cpu-box"
    assert service_target(service("c"), address="dns").node is None


@pytest.mark.parametrize(
    ("svc", "message"),
    [
        (service("a", annotations={API_ANNOTATION: "grpc"}), "not one of ollama, openai"),
        (service("b", ports=()), "no ports"),
        (service("c", annotations={PORT_ANNOTATION: "http"}), "is not a port"),
        (service("d", "ftp://127.0.0.1:21"), "not a neuron URL"),
    ],
)
def test_services_that_cannot_be_neurons_say_why(svc: Json, message: str) -> None:
    with pytest.raises(NotANeuron, match=message):
        service_target(svc, address="dns")


# list and watch


async def test_the_first_list_registers_labelled_services(
    registry: Registry, fake: FakeKubernetes, sims: list[Proc]
) -> None:
    fake.put(service("gpu-a", sims[0].url, annotations={NODE_ANNOTATION: "gpu-box"}))
    fake.put(service("web", sims[1].url, labels={"app": "web"}))
    async with discovering(registry, fake):
        await eventually(lambda: "k8s-ganglion-gpu-a" in names(registry))
        neuron = registry.get("k8s-ganglion-gpu-a")
        assert (neuron.url, neuron.api, neuron.node) == (sims[0].url, Dialect.OLLAMA, "gpu-box")
        assert neuron.models == ["sim-a:latest"]
        await eventually(lambda: fake.watches >= 1)
        assert names(registry) == {"k8s-ganglion-gpu-a"}
        assert fake.paths[0] == "/api/v1/services"


async def test_watch_events_register_and_remove(
    registry: Registry, fake: FakeKubernetes, sims: list[Proc]
) -> None:
    async with discovering(registry, fake):
        await eventually(lambda: fake.watches >= 1)
        fake.put(service("gpu-a", sims[0].url))
        await eventually(lambda: "k8s-ganglion-gpu-a" in names(registry))
        fake.put(service("gpu-a", sims[1].url))  # MODIFIED: the Service points elsewhere
        await eventually(lambda: urls(registry).get("k8s-ganglion-gpu-a") == sims[1].url)
        fake.delete(NAMESPACE, "gpu-a")
        await eventually(lambda: names(registry) == set())
        assert fake.lists == 1


@pytest.mark.parametrize("how", ["error event", "http status"])
async def test_an_expired_watch_lists_again(
    registry: Registry, fake: FakeKubernetes, sims: list[Proc], how: str
) -> None:
    async with discovering(registry, fake):
        await eventually(lambda: fake.watches >= 1)
        fake.put(service("gpu-a", sims[0].url), announce=False)  # compacted away
        if how == "error event":
            fake.expire()
        else:
            fake.gone_before = fake.version
            fake.end_watches()
        await eventually(lambda: "k8s-ganglion-gpu-a" in names(registry))
        assert fake.lists == 2


async def test_a_periodic_list_heals_missed_events(
    registry: Registry, fake: FakeKubernetes, sims: list[Proc]
) -> None:
    async with discovering(registry, fake, resync_s=0.5):
        await eventually(lambda: fake.watches >= 1)
        fake.put(service("gpu-a", sims[0].url), announce=False)
        await eventually(lambda: "k8s-ganglion-gpu-a" in names(registry))
        fake.delete(NAMESPACE, "gpu-a", announce=False)
        await eventually(lambda: names(registry) == set())
        assert fake.lists >= 3


async def test_an_unreachable_service_is_retried_until_it_answers(
    registry: Registry, fake: FakeKubernetes, spawn: Spawner, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    fake.put(service("late", f"http://127.0.0.1:{port}"))
    async with discovering(registry, fake):
        await eventually(lambda: fake.watches >= 1)
        await asyncio.sleep(0.5)  # a couple of retries
        assert names(registry) == set()
        warnings = [r.getMessage() for r in caplog.records if "ganglion-late" in r.getMessage()]
        assert len(warnings) == 1  # said once, not at every retry
        assert "not registered yet" in warnings[0]
        await asyncio.to_thread(spawn.sim, 100, port=port)
        await eventually(lambda: "k8s-ganglion-late" in names(registry))


async def test_api_errors_are_retried_with_backoff(
    registry: Registry, fake: FakeKubernetes, sims: list[Proc]
) -> None:
    fake.fail_lists = 2
    fake.put(service("gpu-a", sims[0].url))
    async with discovering(registry, fake):
        await eventually(lambda: "k8s-ganglion-gpu-a" in names(registry))
        assert fake.lists == 3


async def test_neurons_not_discovered_are_never_touched(
    registry: Registry, fake: FakeKubernetes, sims: list[Proc]
) -> None:
    await registry.add(sims[1].url, name="desk")
    await registry.add(sims[0].url, name="k8s-ganglion-stale")  # from a previous run
    async with discovering(registry, fake):
        await eventually(lambda: "k8s-ganglion-stale" not in names(registry))
        fake.put(service("gpu-a", f"{sims[0].url}/"))
        await eventually(lambda: "k8s-ganglion-gpu-a" in names(registry))
        fake.delete(NAMESPACE, "gpu-a")
        await eventually(lambda: "k8s-ganglion-gpu-a" not in names(registry))
    assert names(registry) == {"desk"}


async def test_a_namespace_limits_what_is_listed_and_owned(
    registry: Registry, fake: FakeKubernetes, sims: list[Proc]
) -> None:
    await registry.add(sims[1].url, name="k8s-elsewhere-b")
    fake.put(service("a", sims[0].url))
    fake.put(service("c", "http://127.0.0.1:9", namespace="elsewhere"))
    async with discovering(registry, fake, namespace=NAMESPACE):
        await eventually(lambda: "k8s-ganglion-a" in names(registry))
        await eventually(lambda: fake.watches >= 1)
    assert names(registry) == {"k8s-ganglion-a", "k8s-elsewhere-b"}
    assert set(fake.paths) == {"/api/v1/namespaces/ganglion/services"}


# configuration: kubeconfig and in-cluster


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, *, client_certs: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        if client_certs:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _issue(folder: Path, name: str, usage: str, san: str | None) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text(
        f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
        + (f"subjectAltName={san}\n" if san else "")
    )
    _openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", key, "-out", csr, "-subj", f"/CN={name}"),
    )
    _openssl(
        *("x509", "-req", "-in", csr, "-CA", folder / "ca.crt", "-CAkey", folder / "ca.key"),
        *("-CAcreateserial", "-out", cert, "-days", "1", "-extfile", ext),
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    need(shutil.which("openssl") is not None, "openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", folder / "ca.key", "-out", folder / "ca.crt", "-days", "1"),
        *("-subj", "/CN=test-cluster-ca", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    server = _issue(folder, "apiserver", "serverAuth", "IP:127.0.0.1")
    client = _issue(folder, "ganglion", "clientAuth", None)
    return Pki(folder / "ca.crt", *server, *client)


@pytest.fixture
def tls_fake(pki: Pki) -> Iterator[FakeKubernetes]:
    api = FakeKubernetes(tls=pki.server_context(), token="s3cret").start()
    yield api
    api.close()


def kubeconfig(
    path: Path, server: str, *, cluster: Json | None = None, user: Json | None = None
) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "lab",
        "contexts": [{"name": "lab", "context": {"cluster": "k3s", "user": "gateway"}}],
        "clusters": [{"name": "k3s", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "gateway", "user": user or {}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def list_status(cluster: Cluster) -> int:
    async with cluster.client() as client:
        return (await client.get("/api/v1/services")).status_code


def test_kubeconfig_with_a_token_and_insecure_skip_verify(
    tmp_path: Path, tls_fake: FakeKubernetes
) -> None:
    path = kubeconfig(
        tmp_path / "config",
        tls_fake.url,
        cluster={"insecure-skip-tls-verify": True},
        user={"token": "s3cret"},
    )
    cluster = load_kubeconfig(str(path))
    assert cluster.server == tls_fake.url
    assert not cluster.in_cluster
    assert asyncio.run(list_status(cluster)) == 200
    assert tls_fake.auth[-1] == "Bearer s3cret"


def test_kubeconfig_ca_is_trusted_and_required(
    tmp_path: Path, tls_fake: FakeKubernetes, pki: Pki
) -> None:
    shutil.copy(pki.ca, tmp_path / "ca.crt")
    (tmp_path / "token").write_text("s3cret\n")
    by_file = kubeconfig(
        tmp_path / "by-file",
        tls_fake.url,
        cluster={"certificate-authority": "ca.crt"},  # relative to the kubeconfig
        user={"tokenFile": "token"},
    )
    by_data = kubeconfig(
        tmp_path / "by-data",
        tls_fake.url,
        cluster={"certificate-authority-data": b64(pki.ca)},
        user={"token": "s3cret"},
    )
    untrusted = kubeconfig(tmp_path / "untrusted", tls_fake.url, user={"token": "s3cret"})
    assert asyncio.run(list_status(load_kubeconfig(str(by_file)))) == 200
    assert asyncio.run(list_status(load_kubeconfig(str(by_data)))) == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(list_status(load_kubeconfig(str(untrusted))))


def test_kubeconfig_client_certificates(tmp_path: Path, pki: Pki) -> None:
    api = FakeKubernetes(tls=pki.server_context(client_certs=True)).start()
    try:
        path = kubeconfig(
            tmp_path / "config",
            api.url,
            cluster={"certificate-authority-data": b64(pki.ca)},
            user={
                "client-certificate-data": b64(pki.client_cert),
                "client-key-data": b64(pki.client_key),
            },
        )
        assert asyncio.run(list_status(load_kubeconfig(str(path)))) == 200
        assert api.auth == [None]
    finally:
        api.close()


def test_kubeconfigs_merge_and_say_what_is_wrong(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", "http://127.0.0.1:1", user={"token": "t"})
    second = tmp_path / "b"
    second.write_text(
        yaml.safe_dump(
            {
                "current-context": "other",
                "clusters": [{"name": "k3s", "cluster": {"server": "http://127.0.0.1:2"}}],
                "users": [{"name": "gateway", "user": {"token": "t2"}}],
            }
        )
    )
    merged = load_kubeconfig(f"{first}{os.pathsep}{second}")  # the first file's settings win
    assert (merged.server, merged.token) == ("http://127.0.0.1:1", "t")
    with pytest.raises(ConfigError, match="no context 'other'"):
        load_kubeconfig(f"{second}{os.pathsep}{first}")
    with pytest.raises(ConfigError, match="no context 'nope'"):
        load_kubeconfig(str(first), context="nope")
    with pytest.raises(ConfigError, match="no kubeconfig"):
        load_kubeconfig(str(tmp_path / "missing"))
    exec_user = kubeconfig(tmp_path / "exec", "http://127.0.0.1:1", user={"exec": {"command": "x"}})
    with pytest.raises(ConfigError, match="'exec'"):
        load_kubeconfig(str(exec_user))


def test_in_cluster_config_from_the_service_account(
    tmp_path: Path, tls_fake: FakeKubernetes, pki: Pki
) -> None:
    root = tmp_path / "serviceaccount"
    root.mkdir()
    shutil.copy(pki.ca, root / "ca.crt")
    (root / "token").write_text("s3cret")
    port = tls_fake.url.rsplit(":", 1)[1]
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    cluster = load_cluster(env, service_account=root)
    assert (cluster.server, cluster.in_cluster) == (tls_fake.url, True)
    assert asyncio.run(list_status(cluster)) == 200
    (root / "token").write_text("rotated")  # the kubelet rotates the token: read it every time
    assert asyncio.run(list_status(cluster)) == 401
    assert tls_fake.auth[-2:] == ["Bearer s3cret", "Bearer rotated"]


def test_kubeconfig_wins_over_in_cluster_and_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / "serviceaccount"
    root.mkdir()
    (root / "token").write_text("t")
    path = kubeconfig(tmp_path / "config", "http://127.0.0.1:1", user={"token": "t"})
    env = {"KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBECONFIG": str(path)}
    assert load_cluster(env, service_account=root).server == "http://127.0.0.1:1"
    assert load_cluster({"KUBERNETES_SERVICE_HOST": "10.43.0.1"}, service_account=root).in_cluster
    with pytest.raises(ConfigError, match="set KUBECONFIG"):
        load_cluster({}, service_account=tmp_path / "nowhere")


def test_make_discovery_reads_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry
) -> None:
    path = kubeconfig(tmp_path / "config", "http://127.0.0.1:1", user={"token": "t"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    settings = Settings(discover_namespace="lab", discover_address="dns", discover_resync_s=7)
    discovery = make_discovery("kubernetes", registry, settings)
    assert isinstance(discovery, KubernetesDiscovery)
    assert (discovery.namespace, discovery.address, discovery.resync_s) == ("lab", "dns", 7)
    assert KubernetesDiscovery(registry, Cluster("http://127.0.0.1:1")).address == "cluster-ip"
    with pytest.raises(ConfigError, match="the choices are: kubernetes"):
        make_discovery("consul", registry, settings)


# end to end


def test_serve_discovers_kubernetes_services(
    spawn: Spawner,
    fake: FakeKubernetes,
    sims: list[Proc],
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.token = "gateway-token"
    path = kubeconfig(tmp_path / "kubeconfig", fake.url, user={"token": "gateway-token"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("GANGLION_DISCOVER_RETRY_S", "0.5")
    fake.put(service("ollama-gpu-a", sims[0].url, annotations={NODE_ANNOTATION: "gpu-a"}))
    gateway = spawn.ganglion(
        *("serve", "--port", "{port}", "--db", db_url),
        *("--discover", "kubernetes"),
        ready_path="/fleet/neurons",
    )

    def listed() -> dict[str, Json]:
        result = run_cli("neuron", "list", "--json", "--gateway", gateway.url)
        assert result.returncode == 0, result.stderr
        return {view["name"]: view for view in json.loads(result.stdout)}

    deadline = time.monotonic() + 20
    while "k8s-ganglion-ollama-gpu-a" not in (views := listed()):
        assert time.monotonic() < deadline, gateway.log.read_text()
        time.sleep(0.2)
    view = views["k8s-ganglion-ollama-gpu-a"]
    assert (view["url"], view["node"], view["api"]) == (sims[0].url, "gpu-a", "ollama")

    fake.delete(NAMESPACE, "ollama-gpu-a")
    deadline = time.monotonic() + 20
    while "k8s-ganglion-ollama-gpu-a" in listed():
        assert time.monotonic() < deadline, gateway.log.read_text()
        time.sleep(0.2)
    assert set(fake.auth) == {"Bearer gateway-token"}


def test_the_manifests_in_the_docs_are_valid() -> None:
    validate = pytest.importorskip("kubernetes_validate")
    text = (Path(__file__).parents[2] / "docs" / "discovery.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]
    kinds = []
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            if "kind" in doc:
                validate.validate(doc, "1.33", strict=True)
                kinds.append(doc["kind"])
    assert kinds == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ]
    role = yaml.safe_load_all(blocks[1])
    rules = next(doc for doc in role if doc["kind"] == "ClusterRole")["rules"]
    assert rules == [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}
    ]
