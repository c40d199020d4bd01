"""JSON as ganglion writes it: compact, UTF-8, keys in the order they were built.

The answers the gateway and the simulator stream are built as plain dicts by the typed
builders in :mod:`ganglion.wire.ollama` and :mod:`ganglion.wire.openai` and written here,
once per token: orjson writes them at half pydantic-core's cost, and several times faster
than validating a model first. What orjson cannot write (an integer past 64 bits, a model)
goes to pydantic-core. Moments in UTC end in ``Z``, as Ollama writes them; a float that is
not a number (NaN, infinity) is written ``null``, which every JSON reader takes. The pieces
of a stream that carry text alone are written around their text (:func:`quoted`), from the
bytes :func:`around` it, worked out once an answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import orjson
from pydantic_core import to_json

_OPTIONS = orjson.OPT_UTC_Z


def dumps(value: object) -> str:
    """``value`` as compact JSON text."""
    return dumps_bytes(value).decode()


def dumps_bytes(value: object) -> bytes:
    """``value`` as compact JSON, encoded in UTF-8: a body ready to send, with no round trip
    through ``str``."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson's refusals (JSONEncodeError) are TypeErrors
        return to_json(value)


def quoted(text: str) -> bytes:
    """``text`` as a JSON string, UTF-8, byte for byte as :func:`dumps_bytes` writes it. A
    lone surrogate (which UTF-8 cannot carry) is written escaped."""
    try:
        return orjson.dumps(text)
    except TypeError:
        return json.dumps(text).encode()


TEXT_MARK = "\x00text\x00"
"""Stands for a piece's text in what :func:`around` cuts."""


def around(written: str | bytes, marks: Sequence[str]) -> list[bytes]:
    """The bytes of ``written`` before, between and after ``marks``, strings written in it
    in that order: so that the same is written again with other strings in their places
    (each :func:`quoted`). Each mark is found at its last place, so a string that comes
    before it (a model's name, which a caller chose) is never taken for it."""
    rest = written.encode() if isinstance(written, str) else written
    pieces = []
    for mark in reversed(marks):
        rest, _, after = rest.rpartition(quoted(mark))
        pieces.append(after)
    pieces.append(rest)
    return pieces[::-1]
