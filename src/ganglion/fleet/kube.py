"""A small Kubernetes API client: where the API is, how to authenticate, list and watch.

:func:`load_cluster` finds the API as kubectl does: ``$KUBECONFIG``, else the pod's service
account (in-cluster), else ``~/.kube/config``. A :class:`Cluster` makes an ``httpx`` client
with its TLS context and bearer token. :func:`list_objects` and :func:`watch_objects` speak the
API's list and watch (newline-delimited events from a ``resourceVersion``); a refusal or an
``ERROR`` event is :class:`ApiError`. :mod:`ganglion.fleet.discovery` decides what the objects
mean.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from ganglion.errors import ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
API_TIMEOUT = httpx.Timeout(10.0)
WATCH_TIMEOUT = httpx.Timeout(10.0, read=None)  # a watch is bounded by the caller's deadline

Json = Mapping[str, Any]


# where the API is


@dataclass(frozen=True)
class Cluster:
    """Where the Kubernetes API is and how to authenticate to it.

    ``token_file`` is read at every request: in-cluster tokens are rotated by the kubelet.
    """

    server: str
    verify: ssl.SSLContext | bool = True
    token: str | None = None
    token_file: Path | None = None
    in_cluster: bool = False

    def client(self, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
        auth = BearerToken(self.token, self.token_file) if self.token or self.token_file else None
        return httpx.AsyncClient(
            base_url=self.server,
            verify=self.verify,
            auth=auth,
            timeout=API_TIMEOUT,
            transport=transport,
        )


class BearerToken(httpx.Auth):
    def __init__(self, token: str | None, token_file: Path | None) -> None:
        self.token = token
        self.token_file = token_file

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token
        if self.token_file is not None:
            token = self.token_file.read_text().strip()
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def load_cluster(
    env: Mapping[str, str] = os.environ, *, service_account: Path = SERVICE_ACCOUNT_DIR
) -> Cluster:
    """The API to watch: ``$KUBECONFIG`` when set, else the pod's service account when running
    in a cluster, else ``~/.kube/config``."""
    if env.get("KUBECONFIG"):
        return load_kubeconfig(env["KUBECONFIG"])
    if env.get("KUBERNETES_SERVICE_HOST") and (service_account / "token").exists():
        return load_in_cluster(env, root=service_account)
    if Path(DEFAULT_KUBECONFIG).expanduser().exists():
        return load_kubeconfig(DEFAULT_KUBECONFIG)
    raise ConfigError(
        "no Kubernetes API to discover neurons from: not running in a cluster (no "
        f"KUBERNETES_SERVICE_HOST and {service_account}/token) and no kubeconfig at "
        f"{DEFAULT_KUBECONFIG}; set KUBECONFIG to the cluster's kubeconfig"
    )


def load_in_cluster(
    env: Mapping[str, str] = os.environ, *, root: Path = SERVICE_ACCOUNT_DIR
) -> Cluster:
    """The pod's own service account: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the token and CA
    under ``root``."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (root / "token").exists():
        raise ConfigError(
            f"not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is unset or {root}/token "
            "is missing (is automountServiceAccountToken off?)"
        )
    if ":" in host:
        host = f"[{host}]"
    ca = root / "ca.crt"
    verify = tls_context(ca_file=ca) if ca.exists() else True
    return Cluster(f"https://{host}:{port}", verify, token_file=root / "token", in_cluster=True)


def load_kubeconfig(paths: str, *, context: str | None = None) -> Cluster:
    """The cluster of ``context`` (default: the current context) in the kubeconfig file(s)
    ``paths`` (``os.pathsep``-separated, merged as kubectl does: the first setting wins)."""
    config = _merge_kubeconfigs([Path(p).expanduser() for p in paths.split(os.pathsep) if p])
    name = context or config.current_context
    if not name or name not in config.contexts:
        raise ConfigError(
            f"kubeconfig {paths} has no context {name!r}: "
            "run kubectl config use-context NAME, or point KUBECONFIG at another file"
        )
    ctx = config.contexts[name]
    cluster, cluster_dir = config.clusters.get(ctx.get("cluster", ""), ({}, Path()))
    user, user_dir = config.users.get(ctx.get("user", ""), ({}, Path()))
    if not cluster.get("server"):
        raise ConfigError(f"kubeconfig context {name!r} names no cluster with a server URL")
    for plugin in ("exec", "auth-provider"):
        if plugin in user:
            raise ConfigError(
                f"kubeconfig user {ctx.get('user')!r} authenticates with {plugin!r}, which "
                "ganglion does not run: give it a token (a service account's) or a client "
                "certificate"
            )
    verify: ssl.SSLContext | bool = True
    client_cert = _pem(user, "client-certificate", user_dir)
    client_key = _pem(user, "client-key", user_dir)
    ca = _pem(cluster, "certificate-authority", cluster_dir)
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    if ca or client_cert or insecure:
        verify = tls_context(ca_data=ca, cert=client_cert, key=client_key, insecure=insecure)
    token_file = user.get("tokenFile")
    return Cluster(
        str(cluster["server"]),
        verify,
        token=user.get("token"),
        token_file=(user_dir / token_file) if token_file else None,
    )


@dataclass
class _Kubeconfig:
    current_context: str | None
    contexts: dict[str, dict[str, Any]]
    clusters: dict[str, tuple[dict[str, Any], Path]]
    users: dict[str, tuple[dict[str, Any], Path]]


def _merge_kubeconfigs(paths: list[Path]) -> _Kubeconfig:
    merged = _Kubeconfig(None, {}, {}, {})
    found = [path for path in paths if path.is_file()]
    if not found:
        raise ConfigError(f"no kubeconfig at {', '.join(map(str, paths))}: check KUBECONFIG")
    for path in found:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read kubeconfig {path}: {error}") from None
        merged.current_context = merged.current_context or doc.get("current-context") or None
        for entry in doc.get("contexts") or []:
            merged.contexts.setdefault(entry["name"], entry.get("context") or {})
        for entry in doc.get("clusters") or []:
            merged.clusters.setdefault(entry["name"], (entry.get("cluster") or {}, path.parent))
        for entry in doc.get("users") or []:
            merged.users.setdefault(entry["name"], (entry.get("user") or {}, path.parent))
    return merged


def _pem(section: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    """``key-data`` (base64) or the file ``key`` (relative to the kubeconfig's folder)."""
    if data := section.get(f"{key}-data"):
        return base64.b64decode(data)
    if path := section.get(key):
        return (base / Path(path).expanduser()).read_bytes()
    return None


def tls_context(
    *,
    ca_file: Path | None = None,
    ca_data: bytes | None = None,
    cert: bytes | None = None,
    key: bytes | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """An SSL context trusting ``ca`` (or nothing, when ``insecure``), presenting ``cert``."""
    try:
        context = ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None,
            cadata=ca_data.decode() if ca_data and not insecure else None,
        )
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert:
            with tempfile.TemporaryDirectory() as folder:  # load_cert_chain reads files only
                cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
                cert_path.write_bytes(cert)
                key_path.write_bytes(key or cert)
                context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, ValueError, OSError) as error:
        raise ConfigError(f"the Kubernetes API's certificates cannot be loaded: {error}") from None
    return context


# list and watch


async def list_objects(
    client: httpx.AsyncClient, path: str, *, selector: str
) -> tuple[list[Json], str]:
    """The objects at ``path`` whose labels match ``selector``, and the ``resourceVersion`` to
    watch from."""
    response = await client.get(path, params={"labelSelector": selector})
    check(response)
    body = response.json()
    return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])


async def watch_objects(
    client: httpx.AsyncClient,
    path: str,
    *,
    selector: str,
    version: str,
    deadline: float,
    backoff_s: float,
) -> AsyncGenerator[Json, None]:
    """The events (``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK``) at ``path`` from
    ``version`` until ``deadline`` (on the event loop's clock); an ``ERROR`` event is
    :class:`ApiError` (code 410: the version expired, list again).

    Only the waits for the server are cut at the deadline, never the caller's handling of an
    event. Close the iterator (:func:`contextlib.aclosing`) when leaving it early.
    """
    clock = asyncio.get_running_loop().time
    while (left := deadline - clock()) > 0:
        params = {
            "labelSelector": selector,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(left))),
        }
        began = clock()
        async with client.stream("GET", path, params=params, timeout=WATCH_TIMEOUT) as response:
            if response.status_code != 200:
                await response.aread()
            check(response)
            lines = response.aiter_lines()
            while True:
                try:
                    line = await asyncio.wait_for(anext(lines), deadline - clock())
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    return
                if line.strip():
                    event = _event(json.loads(line))
                    yield event
                    version = _version(event["object"]) or version
        if clock() - began < 1.0:
            await asyncio.sleep(backoff_s)  # a server that closes at once: no spin


def _version(found: Json) -> str | None:
    version: str | None = (found.get("metadata") or {}).get("resourceVersion")
    return version


def _event(event: Json) -> Json:
    """A watch event with an ``object``; an ``ERROR`` event raises :class:`ApiError`."""
    found = event.get("object") or {}
    if event.get("type") == "ERROR":
        raise ApiError(f"watch error: {found.get('message') or found}", found.get("code"))
    return {**event, "object": found}


class ApiError(Exception):
    """The Kubernetes API refused a request or sent an ERROR event."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def check(response: httpx.Response) -> None:
    """Nothing for a 200; else :class:`ApiError` with the API's message (and, for 401 and 403,
    the permissions discovery needs)."""
    if response.status_code == 200:
        return
    hint = ""
    if response.status_code in (401, 403):
        hint = " (grant get/list/watch on services: see docs/discovery.md)"
    try:
        message = response.json().get("message") or response.text
    except ValueError:
        message = response.text
    raise ApiError(f"HTTP {response.status_code}: {message[:200]}{hint}", response.status_code)
