"""Fixtures for the neuron tests: a hand-driven clock, timed fake streams, a real llama server."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

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
