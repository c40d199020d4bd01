"""Fixtures for the neuron tests: a hand-driven clock, timed fake streams, an ASGI app served
on loopback, a real llama server."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ganglion.errors import LocalFleetError
from ganglion.local.llama import LlamaServer, model_path


class Clock:
    """A clock that moves only when told to; adapters take it as ``clock=``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TimedStream(httpx.AsyncByteStream):
    """A response body sent in pieces, moving the clock before each; may break at the end."""

    def __init__(
        self, clock: Clock, pieces: list[tuple[float, str]], error: Exception | None = None
    ) -> None:
        self._clock = clock
        self._pieces = pieces
        self._error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for delay, piece in self._pieces:
            self._clock.advance(delay)
            yield piece.encode()
        if self._error is not None:
            raise self._error


StreamFactory = Callable[..., TimedStream]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed_stream(clock: Clock) -> StreamFactory:
    """``timed_stream([(delay_s, piece), ...], error=None)``: a body for ``httpx.Response``."""

    def make(pieces: list[tuple[float, str]], error: Exception | None = None) -> TimedStream:
        return TimedStream(clock, pieces, error)

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Upstream:
    """An ASGI server's app that reads each request, notes its client port (one port: one
    connection kept alive), then answers it with :meth:`answer`."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        self.ports.append(scope["client"][1])
        await self.answer(scope["path"], send)

    async def answer(self, path: str, send: Any) -> None:
        raise NotImplementedError


@asynccontextmanager
async def served(app: Any, keep_alive_s: int = 5) -> AsyncIterator[str]:
    """``app`` (ASGI) served by a real uvicorn on a free loopback port, for the block: its URL.
    An idle connection is closed after ``keep_alive_s``."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="critical", timeout_keep_alive=keep_alive_s
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _unavailable(reason: str) -> None:
    """In CI the real server is required: fail. Elsewhere, skip with the reason."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true needs the real llama.cpp server: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_model() -> Path:
    """The bundled GGUF model, once llama-cpp-python is known to be installed too."""
    try:
        model = model_path()
    except LocalFleetError as exc:
        _unavailable(str(exc))
    if importlib.util.find_spec("llama_cpp") is None:
        _unavailable("llama-cpp-python is not installed (pip install 'ganglion[local]')")
    return model


@pytest.fixture(scope="session")
def llama_server(
    llama_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """One real llama-cpp-python server with SmolLM2-135M, as ``ganglion local`` starts it."""
    with LlamaServer(llama_model, log_dir=tmp_path_factory.mktemp("llama")) as server:
        yield server
