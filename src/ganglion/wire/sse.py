"""Server-sent events: the one encoder for every event stream ganglion sends.

An event is a few ``field: value`` lines and a blank line::

    event: run                  (optional: the event's kind; without it, "message")
    data: {"id": "..."}         (the payload, one line of JSON here)

    : keep-alive                (a comment, which clients ignore)

    retry: 2000                 (how long a client waits before reconnecting, in ms)

The OpenAI API streams ``data:`` events without a kind and ends with ``data: [DONE]``; the
gateway's own streams (``/fleet/events``, ``/fleet/runs/{id}/events``) name each event.
Reference: https://html.spec.whatwg.org/multipage/server-sent-events.html
"""

from __future__ import annotations

import json
from typing import Any

MEDIA_TYPE = "text/event-stream"

DONE = "data: [DONE]\n\n"
"""The OpenAI API's last event."""


def event(data: str, kind: str | None = None) -> str:
    """One event whose payload ``data`` is already text (on one line)."""
    if kind is None:
        return f"data: {data}\n\n"
    return f"event: {kind}\ndata: {data}\n\n"


def json_event(payload: Any, kind: str | None = None) -> str:
    """One event whose payload is ``payload`` as compact JSON."""
    return event(json.dumps(payload, separators=(",", ":")), kind)


def comment(text: str) -> str:
    """A line clients ignore: it keeps an idle connection open through proxies."""
    return f": {text}\n\n"


def retry(milliseconds: int) -> str:
    """Tells the client how long to wait before it reconnects."""
    return f"retry: {milliseconds}\n\n"
