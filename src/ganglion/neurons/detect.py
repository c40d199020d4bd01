"""Which dialect a URL speaks, and the registry that turns a dialect into an adapter.

Ollama is tried first because Ollama also serves ``/v1/models``: a server that answers
``/api/version`` with a ``version`` is Ollama even though it would pass as OpenAI too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from ganglion.errors import ConfigError, NeuronRequestError, NotAnLLMServer
from ganglion.neurons.base import Dialect, NeuronAdapter, ProbeResult
from ganglion.neurons.http import Connections
from ganglion.neurons.ollama import OllamaAdapter
from ganglion.neurons.openai import OpenAIAdapter

#: Detection is interactive (``ganglion neuron add``): give up quickly.
DETECT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class AdapterFactory(Protocol):
    """What an adapter class is: built from a URL and the shared keyword arguments."""

    def __call__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = ...,
        transport: httpx.AsyncBaseTransport | None = ...,
        timeout: httpx.Timeout = ...,
        clock: Callable[[], float] = ...,
        connections: Connections | None = ...,
    ) -> NeuronAdapter: ...


#: One adapter class per dialect, in the order detection tries them.
ADAPTERS: dict[Dialect, AdapterFactory] = {
    Dialect.OLLAMA: OllamaAdapter,
    Dialect.OPENAI: OpenAIAdapter,
}


def adapter_for(dialect: Dialect | str, url: str, **kw: Any) -> NeuronAdapter:
    """The adapter for ``dialect`` at ``url``; ``kw`` go to its constructor."""
    try:
        factory = ADAPTERS[Dialect(dialect)]
    except ValueError:
        known = ", ".join(ADAPTERS)
        raise ConfigError(f"unknown API dialect {dialect!r}: use one of {known}") from None
    return factory(url, **kw)


async def detect_dialect(
    url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout = DETECT_TIMEOUT,
    clock: Callable[[], float] = time.perf_counter,
    connections: Connections | None = None,
) -> tuple[Dialect, ProbeResult]:
    """Probe ``url`` in each dialect until one answers as itself.

    Raises :class:`~ganglion.errors.NeuronUnreachable` as soon as nothing answers at all,
    and :class:`~ganglion.errors.NotAnLLMServer` when something answered but in no dialect.
    """
    refusals: list[str] = []
    for dialect in ADAPTERS:
        adapter = adapter_for(
            dialect, url, transport=transport, timeout=timeout, clock=clock, connections=connections
        )
        try:
            return dialect, await adapter.probe()
        except (NotAnLLMServer, NeuronRequestError) as exc:
            refusals.append(f"{dialect.value}: {exc}")
        finally:
            await adapter.aclose()
    tried = "; ".join(refusals)
    raise NotAnLLMServer(
        f"{url} answered, but neither as Ollama (GET /api/version) nor as an OpenAI-compatible "
        f"server (GET /v1/models). Tried: {tried}. Check the URL and port; if the server does "
        "speak one of them, say which with --api ollama or --api openai."
    )
