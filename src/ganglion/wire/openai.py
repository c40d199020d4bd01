"""The OpenAI-compatible API (``/v1/*``) as served by llama.cpp, llama-cpp-python and vLLM,
as typed wire models, read and written.

The neuron adapters parse OpenAI-dialect answers with these models; the gateway and the
simulator write theirs with them, completions through :class:`Reply`. Only the fields
ganglion reads or sends are declared; every model allows extra fields. Fields are declared
in the order OpenAI sends them, and :meth:`WireModel.encode` writes the fields that were
given, ``None`` included (OpenAI sends ``"finish_reason": null`` on purpose). llama.cpp's
own server adds a ``timings`` object (milliseconds) to completions and to the last chunk
of a stream; it is declared here because it is the best source of prefill and decode time.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, field_serializer

from ganglion.wire import sse
from ganglion.wire.encoding import TEXT_MARK, around, dumps, quoted


class WireModel(BaseModel):
    """Base of every OpenAI wire model: permissive, so real servers' extra fields pass."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def encode(self) -> str:
        """This model as OpenAI sends it: compact JSON of the fields that were given."""
        return self.model_dump_json(exclude_unset=True)

    def event(self) -> str:
        """This model as one server-sent event of a stream."""
        return sse.event(self.encode())


class Model(WireModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: str | None = None
    created: int | None = None
    owned_by: str | None = None


class ModelList(WireModel):
    """``GET /v1/models``."""

    object: Literal["list"]
    data: list[Model] = Field(default_factory=list)


class PromptTokensDetails(WireModel):
    cached_tokens: int | None = None
    """Prompt tokens found in the server's prompt cache (OpenAI, vLLM, Ollama)."""


class Usage(WireModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt: int, completion: int, cached: int | None = None) -> Usage:
        usage = cls(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )
        if cached is not None:
            usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=cached)
        return usage

    @property
    def cached_tokens(self) -> int | None:
        details = self.prompt_tokens_details
        return details.cached_tokens if details is not None else None


def usage(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    """The ``usage`` of an answer as :class:`Usage` writes it (``Usage.of(...).encode()``),
    built as a plain dict: every answer the gateway writes carries one, and the model costs
    ten times more to build and dump."""
    counts: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        counts["prompt_tokens_details"] = {"cached_tokens": cached}
    return counts


class Timings(WireModel):
    """llama.cpp server's own measurements (not part of OpenAI's API)."""

    cache_n: int | None = None
    """Prompt tokens found in the slot's cache (``cache_prompt``): not in ``prompt_n``."""
    prompt_n: int | None = None
    prompt_ms: float | None = None
    predicted_n: int | None = None
    predicted_ms: float | None = None


class Message(WireModel):
    role: str | None = None
    content: str | None = None


class Choice(WireModel):
    """One choice of a chat completion (``message``) or of a text completion (``text``)."""

    index: int = 0
    message: Message | None = None
    text: str | None = None
    logprobs: Any = None
    finish_reason: str | None = None


class ChatCompletion(WireModel):
    """``POST /v1/chat/completions`` without streaming (text in ``choices[0].message``), and
    ``POST /v1/completions`` (text in ``choices[0].text``): one shape serves both."""

    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str = ""
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage | None = None
    timings: Timings | None = None


class Delta(WireModel):
    role: str | None = None
    content: str | None = None


class ChunkChoice(WireModel):
    """One choice of a streamed chunk: a chat ``delta`` or a completion's ``text``."""

    index: int = 0
    delta: Delta | None = None
    text: str | None = None
    logprobs: Any = None
    finish_reason: str | None = None


class ChatCompletionChunk(WireModel):
    """One ``data:`` event of a streamed chat completion or text completion.

    With ``stream_options.include_usage`` the last chunk has no choices and carries ``usage``.
    """

    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str = ""
    system_fingerprint: str | None = None
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    timings: Timings | None = None


class Embedding(WireModel):
    """One input's vector. llama-cpp-python sends one vector per token instead (a list of
    lists) when the model has no pooling, as chat models do."""

    object: str | None = None
    index: int = 0
    embedding: list[float] | list[list[float]]

    @field_serializer("embedding")
    def _encoded(
        self, vector: list[float] | list[list[float]], info: SerializationInfo
    ) -> list[float] | list[list[float]] | str:
        """As base64 (little-endian float32s) when the caller asked ``encoding_format``."""
        wanted = (info.context or {}).get("encoding_format")
        if wanted != "base64" or any(isinstance(x, list) for x in vector):
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class EmbeddingResponse(WireModel):
    """``POST /v1/embeddings``."""

    object: str | None = None
    data: list[Embedding]
    model: str = ""
    usage: Usage | None = None

    def encode(self, encoding_format: str | None = None) -> str:
        """As :meth:`WireModel.encode`, the vectors as ``encoding_format`` says (``float``
        or ``base64``)."""
        context = {"encoding_format": encoding_format}
        return self.model_dump_json(exclude_unset=True, context=context)


class ErrorDetail(WireModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(WireModel):
    """An error, as the whole body or as an event of a stream."""

    error: ErrorDetail


@dataclass(slots=True)
class Reply:
    """One completion as it is written, whole or streamed chunk by chunk: a typed builder of
    :class:`ChatCompletion` and :class:`ChatCompletionChunk` as plain dicts (fast enough to
    run once per token), written with :meth:`event` or :func:`~ganglion.wire.encoding.dumps`.

    It holds what every chunk repeats: the ``id``, the time it was ``created`` (Unix
    seconds), the ``model`` as the caller named it, and whether it is a chat completion
    (text in a ``message`` or a ``delta``) or a text completion (text in ``text``). With
    ``include_usage`` (``stream_options.include_usage``) every chunk carries ``"usage":
    null`` and :meth:`usage_chunk` writes the last one. The event of nearly every token, a
    chunk with text alone, is written straight to bytes by :meth:`text_event`.
    """

    id: str
    created: int
    model: str
    chat: bool
    include_usage: bool = False
    system_fingerprint: str | None = None
    _head: dict[str, Any] = field(init=False, repr=False, compare=False)
    _text_ends: tuple[bytes, bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )  # what comes before and after the text in text_event, worked out at its first call

    def __post_init__(self) -> None:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        head = {"id": self.id, "object": kind, "created": self.created, "model": self.model}
        if self.system_fingerprint is not None:
            head["system_fingerprint"] = self.system_fingerprint
        self._head = head

    def chunk(
        self, text: str | None, finish_reason: str | None = None, *, role: str | None = None
    ) -> dict[str, Any]:
        """One chunk of the stream: ``text`` (``None``: none, as in a chat's last chunk),
        the ``finish_reason`` on the last, the ``role`` on a chat's first."""
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            delta = {} if role is None else {"role": role}
            choice["delta"] = delta if text is None else delta | {"content": text}
        else:
            choice["text"] = text or ""
        choice |= {"logprobs": None, "finish_reason": finish_reason}
        chunk = self._head | {"choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def text_event(self, text: str) -> bytes:
        """The event of :meth:`chunk` with ``text`` alone (no finish, no role), as bytes: the
        same bytes, written around ``text`` rather than built as a dict and encoded whole."""
        if self._text_ends is None:
            start, end = around(self.event(self.chunk(TEXT_MARK)), [TEXT_MARK])
            self._text_ends = start, end
        start, end = self._text_ends
        return start + quoted(text) + end

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The stream's last chunk with ``include_usage``: no choices, the token counts
        (:func:`usage`)."""
        return self._head | {"choices": [], "usage": usage}

    def whole(self, text: str, finish_reason: str, usage: dict[str, Any]) -> dict[str, Any]:
        """The whole completion, for a caller that does not stream: a :class:`ChatCompletion`
        (text in a ``message``, or a text completion's ``text``), with its ``usage``
        (:func:`usage`)."""
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": finish_reason}
        kind = "chat.completion" if self.chat else "text_completion"
        return self._head | {
            "object": kind,
            "choices": [choice],
            "usage": usage,
        }

    @staticmethod
    def event(chunk: dict[str, Any]) -> str:
        """A chunk as one server-sent event."""
        return sse.event(dumps(chunk))


# Requests the gateway accepts (callers' side). Unknown fields are kept and passed on to
# OpenAI-dialect neurons untouched.


class StreamOptions(WireModel):
    include_usage: bool = False


class ChatCompletionRequest(WireModel):
    """``POST /v1/chat/completions``."""

    model: str
    messages: list[dict[str, object]]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    response_format: dict[str, object] | None = None


class CompletionRequest(WireModel):
    """``POST /v1/completions``."""

    model: str
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    response_format: dict[str, object] | None = None


class EmbeddingRequest(WireModel):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str]
    encoding_format: str | None = None
