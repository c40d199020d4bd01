"""JSON as ganglion writes it: compact, UTF-8, keys in the order they were built.

The answers the gateway and the simulator stream are built as plain dicts by the typed
builders in :mod:`ganglion.wire.ollama` and :mod:`ganglion.wire.openai` and written here:
pydantic-core's encoder does it several times faster than validating a model first, and
an answer is written once per token.
"""

from __future__ import annotations

from pydantic_core import to_json


def dumps(value: object) -> str:
    """``value`` as compact JSON text."""
    return to_json(value).decode()


def dumps_bytes(value: object) -> bytes:
    """``value`` as compact JSON, encoded in UTF-8: a body ready to send, with no round trip
    through ``str``."""
    return to_json(value)
