"""JSON as ganglion writes it: compact, UTF-8, keys in the order they were built.

The answers the gateway and the simulator stream are built as plain dicts by the typed
builders in :mod:`ganglion.wire.ollama` and :mod:`ganglion.wire.openai` and written here,
once per token: orjson writes them at half pydantic-core's cost, and several times faster
than validating a model first. What orjson cannot write (an integer past 64 bits, a model)
goes to pydantic-core. Moments in UTC end in ``Z``, as Ollama writes them; a float that is
not a number (NaN, infinity) is written ``null``, which every JSON reader takes.
"""

from __future__ import annotations

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
