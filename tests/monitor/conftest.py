"""The gateway in-process for monitor tests, a reader for its event stream, and the
browser (Debian's Chromium driven by Playwright) for the page's tests.

httpx's ``ASGITransport`` waits for a whole response body, which an event stream never
ends, so :class:`EventStream` drives the ASGI app directly and parses events as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from ganglion.gateway.state import Gateway
from tests.conftest import need
from tests.fakes import FakeFleet, gpu_and_cpu, in_process

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page


@dataclass
class InProcess:
    app: FastAPI
    client: httpx.AsyncClient
    fleet: FakeFleet

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway


@pytest.fixture
def fleet() -> FakeFleet:
    return gpu_and_cpu()


@pytest.fixture
async def gateway_app(fleet: FakeFleet, tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(fleet, tmp_path / "g.db") as (app, client):
        yield InProcess(app, client, fleet)


@dataclass
class EventStream:
    """``GET path`` on an ASGI app, read event by event until closed."""

    app: FastAPI
    path: str = "/fleet/events"
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)
    _chunks: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    _buffer: str = ""
    _gone: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"gateway"), (b"accept", b"text/event-stream")],
            "server": ("gateway", 80),
            "client": ("127.0.0.1", 50000),
        }
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message.get("body"):
                await self._chunks.put(message["body"])

        self._task = asyncio.create_task(self.app(scope, receive, send))  # type: ignore[arg-type]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._gone.set()
        assert self._task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)

    async def next(self, timeout: float = 2.0) -> tuple[str, Any]:
        """The next event as (kind, data); comments are kept in :attr:`comments`."""
        while True:
            while "\n\n" in self._buffer:
                block, self._buffer = self._buffer.split("\n\n", 1)
                event = self._parse(block)
                if event is not None:
                    return event
            chunk = await asyncio.wait_for(self._chunks.get(), timeout)
            self._buffer += chunk.decode()

    async def drain(self, quiet: float) -> list[tuple[str, Any]]:
        """Every event until none has come for ``quiet`` seconds."""
        events = []
        with contextlib.suppress(TimeoutError):
            while True:
                events.append(await self.next(quiet))
        return events

    def _parse(self, block: str) -> tuple[str, Any] | None:
        kind, data = "message", []
        for line in block.splitlines():
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        return (kind, json.loads("\n".join(data))) if data else None


# --- the browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "monitor"
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    need(importlib.util.find_spec("playwright") is not None, "Playwright (Python) is missing")
    need(CHROMIUM.exists(), f"Chromium is missing at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Console:
    """Every console error and uncaught exception of a page."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        return page

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    """A fresh page, closed before the gateway stops (an open event stream delays it)."""
    console = Console()
    tab = console.watch(browser.new_page(viewport=VIEWPORT))
    yield tab, console
    tab.close()
