"""What the Ollama and OpenAI front doors share when they read a request: the neuron it is
pinned to, its routing estimate, its options; and the header that says who answered. The
forwarding itself, with failover, is :mod:`ganglion.dispatch`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request

from ganglion.fleet.neuron import Neuron
from ganglion.routing import DEFAULT_OUTPUT_TOKENS, Job

PIN_HEADER = "X-Ganglion-Neuron"
CHARS_PER_TOKEN = 4

# Sampling options both dialects call by the same name; everything else stays native.
COMMON_OPTIONS = frozenset(
    {"temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty"}
)


def pinned(request: Request) -> str | None:
    """The neuron the caller asked for by name (``X-Ganglion-Neuron``), if any."""
    return unquote(request.headers.get(PIN_HEADER, "")) or None


def served_by(neuron: Neuron) -> dict[str, str]:
    """``X-Ganglion-Neuron``: the neuron that answered. Names are ASCII (``check_name``); one
    stored before that rule is percent-encoded, since a header value cannot carry it."""
    return {PIN_HEADER: quote(neuron.name, safe="")}


def job(model: str, texts: Iterable[Any], max_tokens: int | None) -> Job:
    """A routing estimate: about four characters a token for the prompt."""
    chars = sum(len(t if isinstance(t, str) else json.dumps(t)) for t in texts)
    return Job(model, chars // CHARS_PER_TOKEN, max_tokens or DEFAULT_OUTPUT_TOKENS)


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(common, native)``: options every dialect knows, and the rest."""
    common = {k: v for k, v in options.items() if k in COMMON_OPTIONS}
    native = {k: v for k, v in options.items() if k not in COMMON_OPTIONS}
    return common, native
