"""The embedded default's fleet: N llama.cpp servers with the bundled model, registered.

Neurons named ``local-N`` belong to this module: a stale one (left by a crash) is replaced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ganglion.client import GatewayClient
from ganglion.errors import GatewayError
from ganglion.local.llama import LlamaServer

LOCAL_PREFIX = "local-"


class LocalFleet:
    """Start ``count`` local llama.cpp neurons and register them with the gateway."""

    def __init__(
        self,
        client: GatewayClient,
        count: int,
        *,
        node: str = "localhost",
        log_dir: Path | None = None,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.client = client
        self.count = count
        self.node = node
        self.log_dir = log_dir
        self.say = say
        self.servers: list[LlamaServer] = []
        self.names: list[str] = []

    def up(self) -> list[dict[str, Any]]:
        """Start the servers (in parallel), wait for each, register each. Returns the views."""
        self.servers = [LlamaServer(log_dir=self.log_dir) for _ in range(self.count)]
        self.say(f"starting {self.count} llama.cpp neuron(s) with the bundled SmolLM2-135M")
        with ThreadPoolExecutor(max_workers=self.count) as pool:
            list(pool.map(lambda server: server.start(), self.servers))
        existing = {view["name"] for view in self.client.request("GET", "/fleet/neurons")}
        views = []
        for number, server in enumerate(self.servers, start=1):
            name = f"{LOCAL_PREFIX}{number}"
            if name in existing:
                self.client.request("DELETE", f"/fleet/neurons/{name}")
            body = {"url": server.url, "name": name, "api": "openai", "node": self.node}
            views.append(self.client.request("POST", "/fleet/neurons", json_body=body))
            self.names.append(name)
            self.say(f"registered {name} at {server.url}")
        return views

    def down(self) -> None:
        """Unregister and stop every neuron this fleet started. Safe to call twice."""
        for name in self.names:
            # the gateway may already be gone; the servers must stop all the same
            with contextlib.suppress(GatewayError):
                self.client.request("DELETE", f"/fleet/neurons/{name}")
        self.names = []
        for server in self.servers:
            server.stop()
        self.servers = []
