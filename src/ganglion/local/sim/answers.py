"""What a simulated neuron says: labelled filler text, JSON cut into tokens, an instance of a
requested schema, and deterministic embeddings. Nobody mistakes any of it for a model's."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from ganglion.local.sim.schema import instance_of

LABEL = "[sim]"
"""The first token of every filler answer: nobody mistakes it for a model's."""

FILLER_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")

EMBEDDING_DIM = 16

JSON_OBJECT_ANSWER: dict[str, Any] = {"simulated": True, "text": "simulated filler"}
"""The answer to a request for "any JSON object" (Ollama ``"json"``, OpenAI ``json_object``)."""

_JSON_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s]+)")


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def filler(count: int) -> list[str]:
    """``count`` tokens of labelled filler text, each piece one token."""
    words = [LABEL, *(FILLER_WORDS[i % len(FILLER_WORDS)] for i in range(count - 1))]
    return [word if i == 0 else f" {word}" for i, word in enumerate(words[:count])]


def json_pieces(value: Any) -> list[str]:
    """``value`` as JSON text cut into tokens (words and runs of punctuation)."""
    return text_pieces(json.dumps(value))


def text_pieces(text: str) -> list[str]:
    """``text`` cut into tokens as :func:`json_pieces` cuts JSON."""
    return _JSON_TOKEN.findall(text)


def embedding(model: str, text: str) -> list[float]:
    """A deterministic unit vector of :data:`EMBEDDING_DIM` floats from a hash of the text."""
    digest = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    raw = [int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 32767.5 - 1 for i in range(16)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def ollama_answer(format_: object, scripted: str | None = None) -> str | None:
    """The JSON text to answer an Ollama ``format`` with, or None for free text.
    ``scripted`` (``--structured-reply``) answers every schema request when given."""
    if format_ == "json" or (isinstance(format_, dict) and format_):
        if scripted is not None:
            return scripted
        return json.dumps(instance_of(format_) if isinstance(format_, dict) else JSON_OBJECT_ANSWER)
    return None


def openai_answer(response_format: object, scripted: str | None = None) -> str | None:
    """The JSON text to answer an OpenAI ``response_format`` with, or None for text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    if scripted is not None:
        return scripted
    spec = response_format.get("json_schema") if kind == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return json.dumps(instance_of(schema) if isinstance(schema, dict) else JSON_OBJECT_ANSWER)
