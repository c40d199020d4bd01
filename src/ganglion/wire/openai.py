"""The OpenAI-compatible API (``/v1/*``) as served by llama.cpp, llama-cpp-python and vLLM.

Only the fields ganglion reads are declared; every model allows extra fields. llama.cpp's
own server adds a ``timings`` object (milliseconds) to completions and to the last chunk
of a stream; it is declared here because it is the best source of prefill and decode time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """Base of every OpenAI wire model: permissive, so real servers' extra fields pass."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Model(WireModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: str | None = None
    owned_by: str | None = None


class ModelList(WireModel):
    """``GET /v1/models``."""

    object: Literal["list"]
    data: list[Model] = Field(default_factory=list)


class Usage(WireModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class Timings(WireModel):
    """llama.cpp server's own measurements (not part of OpenAI's API)."""

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
    finish_reason: str | None = None


class ChatCompletion(WireModel):
    """``POST /v1/chat/completions`` without streaming (text in ``choices[0].message``), and
    ``POST /v1/completions`` (text in ``choices[0].text``): one shape serves both."""

    model: str = ""
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
    finish_reason: str | None = None


class ChatCompletionChunk(WireModel):
    """One ``data:`` event of a streamed chat completion or text completion.

    With ``stream_options.include_usage`` the last chunk has no choices and carries ``usage``.
    """

    model: str = ""
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    timings: Timings | None = None


class Embedding(WireModel):
    """One input's vector. llama-cpp-python sends one vector per token instead (a list of
    lists) when the model has no pooling, as chat models do."""

    index: int = 0
    embedding: list[float] | list[list[float]]


class EmbeddingResponse(WireModel):
    """``POST /v1/embeddings``."""

    model: str = ""
    data: list[Embedding]
    usage: Usage | None = None


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
