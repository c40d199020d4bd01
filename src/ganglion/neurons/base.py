"""The one protocol every neuron adapter speaks, and the values it trades in.

An adapter turns one dialect (Ollama native, OpenAI-compatible) into these dialect-free
values. Token statistics come back in one shape whatever the dialect, so the registry and
the router never care which server is behind a neuron.

The values every request makes (its call, its answer, its stats, each chunk of a stream)
are plain slotted dataclasses, not frozen ones: a frozen dataclass sets each field through
``object.__setattr__``, twice the cost, and nothing changes them once made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ganglion.errors import NeuronStreamBroken


class Dialect(StrEnum):
    """The API a neuron speaks."""

    OLLAMA = "ollama"
    OPENAI = "openai"


@dataclass(slots=True)
class TokenStats:
    """What one request cost. Durations in seconds; ``None`` when the neuron did not say.

    ``decode_s`` covers output tokens only; ``prefill_s`` the prompt tokens the neuron read
    (not the ``cached_tokens`` it found in its KV cache, which are counted in
    ``prompt_tokens``); ``load_s`` loading the model into memory; ``ttft_s`` is measured by
    us from the request start to the first output token; ``wall_s`` from request start to
    the last byte.
    """

    prompt_tokens: int | None = None
    output_tokens: int | None = None
    prefill_s: float | None = None
    decode_s: float | None = None
    load_s: float | None = None
    ttft_s: float | None = None
    wall_s: float = 0.0
    cached_tokens: int | None = None

    @property
    def decode_tps(self) -> float | None:
        """Output tokens per second of decode, or ``None`` when it cannot be known."""
        if not self.output_tokens or not self.decode_s or self.decode_s <= 0:
            return None
        return self.output_tokens / self.decode_s

    @property
    def prefill_tps(self) -> float | None:
        """Prompt tokens read per second: the cached ones took no reading."""
        read = self.read_tokens
        if not read or not self.prefill_s or self.prefill_s <= 0:
            return None
        return read / self.prefill_s

    @property
    def read_tokens(self) -> int | None:
        """The prompt tokens the neuron read (those it did not find in its cache)."""
        if self.prompt_tokens is None:
            return None
        return max(self.prompt_tokens - (self.cached_tokens or 0), 0)


@dataclass(slots=True)
class ChatCall:
    """A chat request in no particular dialect.

    ``messages`` are Ollama/OpenAI style dicts (``{"role": ..., "content": ...}``).
    ``format`` is ``"json"`` or a JSON schema (Ollama ``format``; OpenAI ``response_format``).
    ``max_tokens`` maps to Ollama ``options.num_predict``. ``options`` carries the sampling
    options both dialects share (temperature, seed, top_p, stop, ...). ``native`` holds the
    caller's other fields (tools, keep_alive, Ollama-only options under ``"options"``...),
    sent only to a neuron that speaks ``native_dialect``, so nothing is lost in passthrough
    and nothing foreign reaches a neuron of the other dialect.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    native: dict[str, Any] = field(default_factory=dict)
    native_dialect: Dialect | None = None


@dataclass(slots=True)
class GenerateCall:
    """A raw completion request: Ollama ``/api/generate``, OpenAI ``/v1/completions``."""

    model: str
    prompt: str
    max_tokens: int | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    native: dict[str, Any] = field(default_factory=dict)
    native_dialect: Dialect | None = None


@dataclass(slots=True)
class Completion:
    """A whole answer with what it cost."""

    model: str
    text: str
    stats: TokenStats
    done_reason: str | None = None


@dataclass(slots=True)
class Chunk:
    """One piece of a streamed answer. The last chunk has ``done`` set and carries ``stats``."""

    text: str
    done: bool = False
    stats: TokenStats | None = None
    done_reason: str | None = None


async def collected(chunks: AsyncIterator[Chunk], model: str) -> Completion:
    """A streamed answer put together: its text, and the last chunk's stats and reason."""
    parts: list[str] = []
    try:
        async for chunk in chunks:
            parts.append(chunk.text)
            if chunk.done:
                stats = chunk.stats or TokenStats()
                return Completion(model, "".join(parts), stats, chunk.done_reason)
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:  # its connection goes back to the pool now, not at collection
            await closer()
    raise NeuronStreamBroken(f"the answer from {model!r} ended before its last chunk")


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A model a neuron can serve."""

    name: str
    size_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelMemory:
    """A loaded model's size in memory, and how much of it is in the GPU's memory (Ollama
    ``/api/ps``: ``size`` and ``size_vram``). Less in VRAM than in all: partly on the CPU."""

    size_bytes: int
    vram_bytes: int

    @property
    def on_cpu(self) -> bool:
        return self.vram_bytes < self.size_bytes


@dataclass(frozen=True)
class ProbeResult:
    """What a liveness probe saw. Probes never load or evict a model.

    ``version`` is the server's version where it tells one (Ollama); ``models`` the models it
    serves (``None`` when the probe did not ask: ``probe(models=False)``); ``loaded`` the
    models in memory now (Ollama ``/api/ps``; ``None`` when the dialect cannot tell);
    ``memory`` where those are, model by model, when the server says (Ollama); ``latency_s``
    the round trip of the liveness call.
    """

    dialect: Dialect
    models: list[str] | None
    loaded: list[str] | None = None
    version: str | None = None
    latency_s: float = 0.0
    memory: dict[str, ModelMemory] | None = None


class NeuronAdapter(Protocol):
    """One inference endpoint, spoken to in its own dialect.

    Adapters raise :class:`ganglion.errors.NeuronUnreachable` when nothing answers,
    :class:`~ganglion.errors.NotAnLLMServer` when the answer is not their dialect,
    :class:`~ganglion.errors.NeuronRequestError` for an error status, and
    :class:`~ganglion.errors.NeuronStreamBroken` when a stream breaks after its first byte.
    """

    dialect: Dialect
    url: str
    times_whole_answers: bool
    """Whether a whole (not streamed) answer says how long its prefill and decode took: then
    asking for one costs least and still feeds the speed estimates. Otherwise only a stream's
    tokens, as they arrive, can tell decode time from the rest."""

    async def probe(self, *, models: bool = True) -> ProbeResult:
        """Whether the neuron is alive, and what it holds; the model list too with ``models``
        (a dialect that learns both from one request may always say it)."""
        ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def chat(self, request: ChatCall) -> Completion: ...

    def chat_stream(self, request: ChatCall) -> AsyncIterator[Chunk]: ...

    async def generate(self, request: GenerateCall) -> Completion: ...

    def generate_stream(self, request: GenerateCall) -> AsyncIterator[Chunk]: ...

    async def embed(self, model: str, inputs: list[str]) -> Embeddings: ...

    async def aclose(self) -> None: ...
