"""What the Ollama and OpenAI front doors share when they read a request: the neuron it is
pinned to, its routing estimate, its options; and when they answer: the headers that say who
answered, and the whole JSON answer itself (:class:`Answer`). The forwarding itself, with
failover, is :mod:`ganglion.dispatch`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from starlette.responses import Response

from ganglion.fleet.neuron import Neuron
from ganglion.prefixes import CHARS_PER_TOKEN, of_messages, of_text
from ganglion.routing import DEFAULT_OUTPUT_TOKENS, MAX_OUTPUT_TOKENS, Job

PIN_HEADER = "X-Ganglion-Neuron"
CACHE_HEADER = "X-Ganglion-Cache"

# Sampling options both dialects call by the same name; everything else stays native.
COMMON_OPTIONS = frozenset(
    {"temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty"}
)


def pinned(request: Request) -> str | None:
    """The neuron the caller asked for by name (``X-Ganglion-Neuron``), if any."""
    name = request.headers.get(PIN_HEADER, "")
    return (unquote(name) if "%" in name else name) or None


def served_by(neuron: Neuron) -> dict[str, str]:
    """``X-Ganglion-Neuron``: the neuron that answered. Names are ASCII (``check_name``); one
    stored before that rule is percent-encoded, since a header value cannot carry it."""
    return {PIN_HEADER: _header_value(neuron.name)}


@lru_cache(maxsize=4096)
def _header_value(name: str) -> str:
    """``name`` as a header value, worked out once per name (once per request otherwise)."""
    return quote(name, safe="")


def answered(neuron: Neuron, cached_tokens: int) -> dict[str, str]:
    """The headers of a chat or completion answer: who served it (``X-Ganglion-Neuron``),
    and whether its neuron was predicted to hold part of its prompt in its KV cache
    (``X-Ganglion-Cache: hit`` or ``miss``)."""
    cache = "hit" if cached_tokens > 0 else "miss"
    return served_by(neuron) | {CACHE_HEADER: cache}


RawHeaders = list[tuple[bytes, bytes]]
_CACHE_HIT = (CACHE_HEADER.lower().encode(), b"hit")
_CACHE_MISS = (CACHE_HEADER.lower().encode(), b"miss")
_JSON = (b"content-type", b"application/json")


def raw_answered(neuron: Neuron, cached_tokens: int) -> RawHeaders:
    """:func:`answered`, as the raw pairs an ASGI server sends, built once per neuron name."""
    return [_raw_served_by(neuron.name), _CACHE_HIT if cached_tokens > 0 else _CACHE_MISS]


@lru_cache(maxsize=4096)
def _raw_served_by(name: str) -> tuple[bytes, bytes]:
    return PIN_HEADER.lower().encode(), _header_value(name).encode("latin-1")


class Answer(Response):
    """A whole JSON answer: ``body`` as it is sent, with ``headers`` (:func:`raw_answered`).

    Starlette's ``Response`` does the same for any body and headers: it encodes text, and
    lowers and encodes each header once per answer. A whole answer from the fleet needs none
    of that, and there is one per request."""

    def __init__(self, body: bytes, headers: RawHeaders) -> None:
        self.body = body
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()), _JSON, *headers]


def job(model: str, texts: Iterable[Any], max_tokens: int | None) -> Job:
    """A routing estimate for embeddings: about four characters a token."""
    chars = sum(len(t if isinstance(t, str) else json.dumps(t)) for t in texts)
    return Job(model, chars // CHARS_PER_TOKEN, _budget(max_tokens))


def chat_job(model: str, messages: Iterable[Mapping[str, Any]], max_tokens: int | None) -> Job:
    """A routing estimate for a chat, with its messages' hash chain for the prefix caches."""
    prompt = of_messages(messages)
    return Job(model, prompt.total_tokens, _budget(max_tokens), prompt)


def text_job(model: str, prompt: str, max_tokens: int | None) -> Job:
    """A routing estimate for a raw completion prompt, chained in blocks."""
    chain = of_text(prompt)
    return Job(model, chain.total_tokens, _budget(max_tokens), chain)


def _budget(max_tokens: int | None) -> int:
    """The output tokens routing takes a request to owe: what it asked for (capped at
    :data:`MAX_OUTPUT_TOKENS`), else :data:`DEFAULT_OUTPUT_TOKENS`."""
    return min(max_tokens, MAX_OUTPUT_TOKENS) if max_tokens else DEFAULT_OUTPUT_TOKENS


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(common, native)``: options every dialect knows, and the rest."""
    common = {k: v for k, v in options.items() if k in COMMON_OPTIONS}
    native = {k: v for k, v in options.items() if k not in COMMON_OPTIONS}
    return common, native
