"""Ollama's native API, as typed wire models (``/api/*``), read and written.

The neuron adapters parse Ollama's answers with these models; the gateway and the simulator
write theirs with them, and stream their chat and generate answers through :func:`answer`
and :func:`ending`, typed builders of the same shapes as plain dicts (fast enough to run
once per token). Only the fields ganglion reads or sends are declared; every
model allows extra fields, so a newer Ollama that adds some still parses. Durations are
integers in nanoseconds, as Ollama sends them. Fields are declared in the order Ollama
sends them, and :meth:`WireModel.encode` leaves out the absent ones (Ollama never sends
``null``). Reference: https://github.com/ollama/ollama/blob/main/docs/api.md
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ganglion.wire.encoding import TEXT_MARK, around, dumps, quoted

NDJSON = "application/x-ndjson"
"""The media type of a streamed answer: one JSON object a line."""


Answer = dict[str, Any]
"""A :class:`ChatResponse` or :class:`GenerateResponse` as written, built by :func:`answer`."""

Ending = dict[str, Any]
"""The :class:`FinalStats` (counts and durations) that close an answer, built by :func:`ending`."""


class WireModel(BaseModel):
    """Base of every Ollama wire model: permissive, so real servers' extra fields pass."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def encode(self) -> str:
        """This model as Ollama sends it: compact JSON without the fields that are None."""
        return self.model_dump_json(exclude_none=True)


class VersionResponse(WireModel):
    """``GET /api/version``."""

    version: str
    ganglion: str | None = None
    """The gateway's own version, beside the Ollama API level it speaks."""


class ModelDetails(WireModel):
    parent_model: str | None = None
    format: str | None = None
    family: str | None = None
    families: list[str] | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None


class ListedModel(WireModel):
    """One entry of ``GET /api/tags``."""

    name: str
    model: str | None = None
    modified_at: str | None = None
    size: int | None = None
    digest: str | None = None
    details: ModelDetails | None = None


class TagsResponse(WireModel):
    """``GET /api/tags``: the models this server has on disk."""

    models: list[ListedModel] = Field(default_factory=list)


class RunningModel(WireModel):
    """One entry of ``GET /api/ps``."""

    name: str
    model: str | None = None
    size: int | None = None
    digest: str | None = None
    details: ModelDetails | None = None
    expires_at: str | None = None
    size_vram: int | None = None
    context_length: int | None = None
    neuron: str | None = None
    """The gateway's addition: the neuron that holds the model."""


class ProcessResponse(WireModel):
    """``GET /api/ps``: the models loaded in memory now."""

    models: list[RunningModel] = Field(default_factory=list)


class ShowResponse(WireModel):
    """``POST /api/show``: what a model is."""

    modelfile: str = ""
    parameters: str = ""
    template: str = ""
    details: ModelDetails = Field(default_factory=ModelDetails)
    model_info: dict[str, object] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)
    modified_at: str | None = None


class Message(WireModel):
    role: str
    content: str = ""


class FinalStats(WireModel):
    """The timing and token counts Ollama adds to a finished answer (``done: true``)."""

    done: bool = False
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_cached_count: int | None = None
    """Of ``prompt_eval_count``, the tokens found in the prompt cache (recent Ollama)."""
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


# The heads of the two answers, declared apart so that an answer's fields come in Ollama's
# order: what was said first, then the metrics (pydantic puts a class's own fields last).


class _ChatHead(WireModel):
    model: str = ""
    created_at: str | None = None
    message: Message | None = None


class _GenerateHead(WireModel):
    model: str = ""
    created_at: str | None = None
    response: str = ""


class ChatResponse(FinalStats, _ChatHead):
    """``POST /api/chat``: the whole answer, or one line of its NDJSON stream."""


class GenerateResponse(FinalStats, _GenerateHead):
    """``POST /api/generate``: the whole answer, or one line of its NDJSON stream."""


class EmbedResponse(WireModel):
    """``POST /api/embed``."""

    model: str = ""
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class LegacyEmbeddingsResponse(WireModel):
    """``POST /api/embeddings`` (the older, one-text form)."""

    embedding: list[float]


class ErrorResponse(WireModel):
    """An error, as the whole body or as the last line of a stream."""

    error: str


def timestamp(moment: datetime) -> str:
    """A ``created_at``: ISO 8601 in UTC, ending in ``Z`` as Ollama writes it."""
    if moment.tzinfo is not UTC:  # every answer's stamp is UTC already: no conversion then
        moment = moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def answer(
    model: str, text: str, *, chat: bool, created_at: str | datetime, end: Ending | None = None
) -> Answer:
    """One answer of ``/api/chat`` (``chat``) or ``/api/generate``, in the shape of
    :class:`ChatResponse` or :class:`GenerateResponse`: a piece of a stream, or with ``end``
    (from :func:`ending`) the last line or the whole answer. ``created_at`` as text, or as a
    moment in UTC, which :func:`~ganglion.wire.encoding.dumps` writes as :func:`timestamp`
    does, at a third of the cost (once a token)."""
    said: Answer = {"model": model, "created_at": created_at}
    if chat:
        said["message"] = {"role": "assistant", "content": text}
    else:
        said["response"] = text
    if end is None:
        said["done"] = False
        return said
    return said | end


def ending(
    done_reason: str,
    *,
    total_s: float,
    load_s: float,
    prompt_tokens: int | None,
    prompt_s: float | None,
    eval_count: int | None,
    eval_s: float | None,
    cached_tokens: int | None = None,
) -> Ending:
    """The fields of :class:`FinalStats` that close an answer, durations in nanoseconds; the
    unknown ones (None) are left out."""
    fields: dict[str, int | None] = {
        "total_duration": _ns(total_s),
        "load_duration": _ns(load_s),
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_cached_count": cached_tokens,
        "prompt_eval_duration": _ns(prompt_s),
        "eval_count": eval_count,
        "eval_duration": _ns(eval_s),
    }
    known = {key: value for key, value in fields.items() if value is not None}
    return {"done": True, "done_reason": done_reason, **known}


def line(value: WireModel | dict[str, Any]) -> str:
    """One line of an NDJSON stream."""
    if isinstance(value, WireModel):
        return value.encode() + "\n"
    return dumps(value) + "\n"


MOMENT_MARK = "\x00moment\x00"
"""Stands for a line's moment in what :func:`~ganglion.wire.encoding.around` cuts."""


class TextLines:
    """The lines of one streamed answer that carry text alone (all but the last), as
    :func:`line` writes :func:`answer`, the same bytes, written around their moment and text
    from pieces worked out once an answer rather than built as a dict and encoded whole."""

    def __init__(self, model: str, *, chat: bool) -> None:
        marked = line(answer(model, TEXT_MARK, chat=chat, created_at=MOMENT_MARK))
        self._start, self._middle, self._end = around(marked, [MOMENT_MARK, TEXT_MARK])

    def line(self, text: str, created_at: datetime) -> bytes:
        """The line that says ``text``, stamped ``created_at`` (a moment in UTC)."""
        moment = orjson.dumps(created_at, option=orjson.OPT_UTC_Z)
        return self._start + moment + self._middle + quoted(text) + self._end


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e9)


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
