"""A test network of hosts in Linux network namespaces, with links that can be cut.

One switch (a bridge in its own namespace) and a host per namespace plugged into it, each
with its own private address; the test process is plugged in too, from the root
namespace, so it talks to every host directly and to nothing else::

    root namespace   ggf<pid>r (10.A.B.1) ══veth══ ggf<pid>u ─┐
    host "gw"        ggf<pid>h1 (10.A.B.2) ══veth══ ggf<pid>p1 ─┤ bridge ggf<pid>b
    host "n1"        ggf<pid>h2 (10.A.B.3) ══veth══ ggf<pid>p2 ─┤ (namespace ggf<pid>-sw)
    ...

:meth:`Network.cut` takes a host's switch port down (the cable pulled at the switch) and
:meth:`Network.mend` puts it back. Processes run on a host with ``ip netns exec``.

Every name starts with :data:`PREFIX` and the creating process's id: :func:`clean_stale`
removes what a crashed earlier run left (its process is gone), and nothing of anyone
else's is ever touched. Deleting a namespace deletes its ends of the veth pairs, and with
them the other ends, so closing the namespaces cleans up every link.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Proc

PREFIX = "ggf"
_OWNED = re.compile(rf"^{PREFIX}(\d+)")


class NetworkError(Exception):
    """An ``ip`` command failed: usually no root, or no network namespaces here."""


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its output, or :class:`NetworkError` with what it said."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def missing() -> str | None:
    """Why this machine cannot host the test network, or None when it can."""
    if shutil.which("ip") is None:
        return "the ip command is missing (install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _links() -> list[str]:
    """The root namespace's link names (``ggf1r@if3`` is the link ``ggf1r``)."""
    lines = ip("-o", "link", "show").splitlines()
    return [line.split(":")[1].strip().split("@")[0] for line in lines if line.strip()]


def clean_stale() -> list[str]:
    """Remove the namespaces (and their processes) and root links of earlier runs whose
    process is gone. Returns what was removed."""
    removed = []
    for name in _namespaces():
        owner = _OWNED.match(name)
        if owner and not _alive(int(owner.group(1))):
            _delete_namespace(name)
            removed.append(name)
    for link in _links():
        owner = _OWNED.match(link)
        if owner and not _alive(int(owner.group(1))):
            ip("link", "delete", link)
            removed.append(link)
    return removed


def _delete_namespace(name: str) -> None:
    """Kill what still runs in namespace ``name`` (only ever ours), then delete it."""
    if name not in _namespaces():
        return
    for pid in ip("netns", "pids", name).split():
        _kill(int(pid))
    ip("netns", "delete", name)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def free_subnet(seed: int) -> str:
    """The first ``10.A.B`` (a /24) from ``seed`` on that no root-namespace route uses."""
    routes = ip("-4", "route", "show")
    for step in range(1000):
        n = seed + step * 7919
        prefix = f"10.{100 + n // 256 % 150}.{n % 256}"
        if f"{prefix}." not in routes:
            return prefix
    raise NetworkError("no free 10.x.y.0/24 subnet for the test network")


@dataclass
class Host:
    """One machine on the test network."""

    name: str
    namespace: str
    address: str
    port: str
    """Its switch port: the link :meth:`Network.cut` takes down."""

    def url(self, port: int) -> str:
        return f"http://{self.address}:{port}"


@dataclass
class Network:
    """The switch, its hosts, and the processes started on them. Use :meth:`start` and
    :meth:`close` (the fixture does, also when a test fails)."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    subnet: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[Proc] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    @property
    def bridge(self) -> str:
        return f"{self.tag}b"

    def start(self) -> None:
        self.subnet = free_subnet(os.getpid())
        ip("netns", "add", self.switch)
        self._on(self.switch, "link", "add", self.bridge, "type", "bridge")
        self._on(self.switch, "link", "set", self.bridge, "up")
        root, uplink = f"{self.tag}r", f"{self.tag}u"
        ip("link", "add", root, "type", "veth", "peer", "name", uplink, "netns", self.switch)
        ip("addr", "add", f"{self.subnet}.1/24", "dev", root)
        ip("link", "set", root, "up")
        self._on(self.switch, "link", "set", uplink, "master", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        """A new namespace plugged into the switch, with the next free address."""
        number = len(self.hosts) + 1
        host = Host(
            name=name,
            namespace=f"{self.tag}-{name}",
            address=f"{self.subnet}.{number + 1}",
            port=f"{self.tag}p{number}",
        )
        eth = f"{self.tag}h{number}"
        ip("netns", "add", host.namespace)
        self.hosts[name] = host
        veth = ("type", "veth", "peer", "name", host.port, "netns", self.switch)
        ip("link", "add", eth, "netns", host.namespace, *veth)
        self._on(host.namespace, "addr", "add", f"{host.address}/24", "dev", eth)
        self._on(host.namespace, "link", "set", eth, "up")
        self._on(host.namespace, "link", "set", "lo", "up")
        self._on(self.switch, "link", "set", host.port, "master", self.bridge, "up")
        return host

    def cut(self, host: Host) -> None:
        """Pull the host's cable at the switch: packets to and from it are lost."""
        self._on(self.switch, "link", "set", host.port, "down")

    def mend(self, host: Host) -> None:
        self._on(self.switch, "link", "set", host.port, "up")

    def launcher(self, host: Host) -> list[str]:
        """The command prefix that runs a program on ``host``."""
        return ["ip", "netns", "exec", host.namespace]

    def process(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        port: int,
        log: Path,
        ready_path: str = "/",
        env: dict[str, str] | None = None,
    ) -> Proc:
        """``argv`` to run on ``host``, serving HTTP on ``port`` there: ``launch`` and
        ``wait`` it, or ``start`` it. ``ip netns exec`` execs the program, so the process
        is the program itself (a SIGKILL reaches it). Stopped by :meth:`close` at the end."""
        proc = Proc(
            [*self.launcher(host), *argv],
            port,
            log,
            ready_path=ready_path,
            env=env or {},
            host=host.address,
        )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        """Stop every process started here, then delete every namespace (and so every link)."""
        for proc in self.processes:
            proc.stop()
        problems = []
        for name in [*(h.namespace for h in self.hosts.values()), self.switch]:
            try:
                _delete_namespace(name)
            except NetworkError as error:  # go on: remove all that can be removed
                problems.append(str(error))
        if f"{self.tag}r" in _links():
            ip("link", "delete", f"{self.tag}r")
        if problems:
            raise NetworkError("; ".join(problems))

    def _on(self, namespace: str, *args: str) -> None:
        ip("-n", namespace, *args)
