"""Ollama's native API, as typed wire models (``/api/*``).

Only the fields ganglion reads are declared; every model allows extra fields, so a newer
Ollama that adds some still parses. Durations are integers in nanoseconds, as Ollama sends
them. Reference: https://github.com/ollama/ollama/blob/main/docs/api.md
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """Base of every Ollama wire model: permissive, so real servers' extra fields pass."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class VersionResponse(WireModel):
    """``GET /api/version``."""

    version: str


class ModelDetails(WireModel):
    format: str | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None


class ListedModel(WireModel):
    """One entry of ``GET /api/tags``."""

    name: str
    model: str | None = None
    size: int | None = None
    digest: str | None = None
    modified_at: str | None = None
    details: ModelDetails | None = None


class TagsResponse(WireModel):
    """``GET /api/tags``: the models this server has on disk."""

    models: list[ListedModel] = Field(default_factory=list)


class RunningModel(WireModel):
    """One entry of ``GET /api/ps``."""

    name: str
    model: str | None = None
    size: int | None = None
    size_vram: int | None = None
    expires_at: str | None = None


class ProcessResponse(WireModel):
    """``GET /api/ps``: the models loaded in memory now."""

    models: list[RunningModel] = Field(default_factory=list)


class Message(WireModel):
    role: str
    content: str = ""


class Metrics(WireModel):
    """The timing and token counts Ollama adds to a finished answer (``done: true``)."""

    done: bool = False
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(Metrics):
    """``POST /api/chat``: the whole answer, or one line of its NDJSON stream."""

    model: str = ""
    message: Message | None = None


class GenerateResponse(Metrics):
    """``POST /api/generate``: the whole answer, or one line of its NDJSON stream."""

    model: str = ""
    response: str = ""


class EmbedResponse(WireModel):
    """``POST /api/embed``."""

    model: str = ""
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


# Requests the gateway accepts (callers' side). Unknown fields are kept and passed on to
# Ollama neurons untouched.


class ChatRequest(WireModel):
    """``POST /api/chat``."""

    model: str
    messages: list[dict[str, object]] = Field(default_factory=list)
    stream: bool = True
    format: str | dict[str, object] | None = None
    options: dict[str, object] = Field(default_factory=dict)


class GenerateRequest(WireModel):
    """``POST /api/generate``."""

    model: str
    prompt: str = ""
    stream: bool = True
    format: str | dict[str, object] | None = None
    options: dict[str, object] = Field(default_factory=dict)


class EmbedRequest(WireModel):
    """``POST /api/embed``: ``input`` is one text or several."""

    model: str
    input: str | list[str]


class LegacyEmbeddingsRequest(WireModel):
    """``POST /api/embeddings`` (the older, one-text form)."""

    model: str
    prompt: str


class ShowRequest(WireModel):
    """``POST /api/show``."""

    model: str | None = None
    name: str | None = None
