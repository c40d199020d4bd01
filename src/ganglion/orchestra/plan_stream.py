"""Reading the brain's plan while it is still being written.

The brain answers one JSON object under a JSON-schema constraint (:func:`stream_schema`)::

    {"opening": "...", "subtasks": [{"heading": "...", "task": "...",
                                     "expected_tokens": 90}, ...], "closing": "..."}

:class:`PlanReader` is fed the text as it streams. It hands out the opening as it grows (so
the answer starts at the brain's first words), each subtask the moment its object closes
(so a worker starts on it while the brain goes on planning), and the closing once whole.
Each subtask is checked as it arrives: a malformed one is skipped with the reason, and
never stops the ones already running; one cut short by the end of the stream likewise.
``parts`` is accepted for ``subtasks``, and ``tokens`` for ``expected_tokens``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ganglion.orchestra.plan import MAX_EXPECTED_TOKENS, MIN_EXPECTED_TOKENS, Subtask

LIST_KEYS = ("subtasks", "parts")
TEXT_KEYS = ("opening", "closing")
HEADING_CHARS = 80


def stream_schema(parts: int) -> dict[str, Any]:
    """The plan's JSON schema, opening first so the answer can start at once."""
    text = {"type": "string"}
    item = {
        "type": "object",
        "properties": {
            "heading": {"type": "string", "minLength": 1},
            "task": {"type": "string", "minLength": 1},
            "expected_tokens": {
                "type": "integer",
                "minimum": MIN_EXPECTED_TOKENS,
                "maximum": MAX_EXPECTED_TOKENS,
            },
        },
        "required": ["heading", "task", "expected_tokens"],
    }
    return {
        "type": "object",
        "properties": {
            "opening": text,
            "subtasks": {"type": "array", "minItems": 1, "maxItems": parts, "items": item},
            "closing": text,
        },
        "required": ["opening", "subtasks", "closing"],
    }


@dataclass(frozen=True)
class Part:
    """A subtask that arrived whole and valid: ``index`` counts every entry, skipped or not."""

    index: int
    subtask: Subtask


@dataclass(frozen=True)
class Skipped:
    index: int
    reason: str


def check_part(item: object, number: int) -> Subtask:
    """One plan entry as a :class:`Subtask`, or ``ValueError`` saying what is wrong. An
    outline's entry is a heading alone; its budget comes from the sizing."""
    if isinstance(item, str) and item.strip():
        outlined = " ".join(item.split())
        return Subtask(outlined, MIN_EXPECTED_TOKENS, outlined[:HEADING_CHARS])
    if not isinstance(item, dict):
        raise ValueError(f"subtask {number} is not an object")
    task = item.get("task")
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"subtask {number} has no task text")
    expected = item.get("expected_tokens", item.get("tokens"))
    if isinstance(expected, bool) or not isinstance(expected, int | float):
        raise ValueError(f"subtask {number} has no expected_tokens number")
    if not math.isfinite(expected):
        raise ValueError(f"subtask {number} has expected_tokens {expected}: give a count")
    size = min(max(int(expected), MIN_EXPECTED_TOKENS), MAX_EXPECTED_TOKENS)
    heading = item.get("heading")
    if not isinstance(heading, str) or not heading.strip():
        heading = task.strip().split("\n")[0]
    return Subtask(task.strip(), size, " ".join(heading.split())[:HEADING_CHARS])


_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n"
#: The longest tail an escape sequence cut in half can leave (``\u12``).
_ESCAPE_TAIL = 5


def partial_string(text: str, start: int) -> tuple[str, int | None]:
    """The JSON string whose quote is at ``start``, decoded as far as it has arrived, and
    where it ends (None while it is not whole)."""
    at = start + 1
    while at < len(text):
        if text[at] == "\\":
            at += 2
        elif text[at] == '"':
            return json.loads(text[start : at + 1]), at + 1
        else:
            at += 1
    body = text[start + 1 :]
    for cut in range(min(_ESCAPE_TAIL, len(body)) + 1):  # an escape may be cut in half
        try:
            return json.loads(f'"{body[: len(body) - cut]}"'), None
        except json.JSONDecodeError:
            continue
    return "", None


@dataclass
class PlanReader:
    """Feed it the brain's text as it streams; read what became known after each feed."""

    max_parts: int
    text: str = ""
    opening: str = ""
    closing: str = ""
    parts: list[Part] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    _at: int = 0  # where the next token starts
    _stage: str = "start"  # start, key, colon, value, list, end
    _key: str = ""
    _count: int = 0  # entries seen, skipped ones included
    _found: list[Part | Skipped] = field(default_factory=list)  # during one feed

    def feed(self, chunk: str) -> tuple[str, list[Part | Skipped]]:
        """Add ``chunk``; the opening text that became known, and the entries that did."""
        before = len(self.opening)
        self._found = []
        self.text += chunk
        steps: dict[str, Callable[[], bool]] = {
            "start": self._start,
            "key": self._read_key,
            "colon": self._colon,
            "value": self._value,
            "list": self._item,
        }
        while self._stage in steps and self._skip_space() and steps[self._stage]():
            pass
        return self.opening[before:], self._found

    def finish(self) -> list[Skipped]:
        """The stream ended: an entry still open was cut short."""
        rest = self.text[self._at :].strip(_SPACE + ",")
        if self._stage != "list" or not rest or rest.startswith("]"):
            return []
        self._count += 1
        cut = Skipped(self._count - 1, f"subtask {self._count} was cut short")
        self.skipped.append(cut)
        return [cut]

    def _skip_space(self) -> bool:
        while self._at < len(self.text) and self.text[self._at] in _SPACE:
            self._at += 1
        return self._at < len(self.text)

    def _start(self) -> bool:
        # anything but an object: the check of the whole text says what is wrong
        self._stage = "key" if self.text[self._at] == "{" else "end"
        self._at += 1
        return self._stage == "key"

    def _read_key(self) -> bool:
        char = self.text[self._at]
        if char == ",":
            self._at += 1
            return True
        if char != '"':
            self._stage = "end"  # the closing brace, or not JSON
            return False
        key, end = partial_string(self.text, self._at)
        if end is None:
            return False
        self._key, self._at, self._stage = key, end, "colon"
        return True

    def _colon(self) -> bool:
        if self.text[self._at] != ":":
            self._stage = "end"
            return False
        self._at += 1
        self._stage = "value"
        return True

    def _value(self) -> bool:
        char = self.text[self._at]
        if self._key in TEXT_KEYS and char == '"':
            value, end = partial_string(self.text, self._at)
            setattr(self, self._key, value)
            if end is None:
                return False
            self._at, self._stage = end, "key"
            return True
        if self._key in LIST_KEYS and char == "[":
            self._at += 1
            self._stage = "list"
            return True
        try:
            _, self._at = _DECODER.raw_decode(self.text, self._at)
        except json.JSONDecodeError:
            return False  # not whole yet
        self._stage = "key"
        return True

    def _item(self) -> bool:
        found = self._found
        char = self.text[self._at]
        if char in ",]":
            self._at += 1
            self._stage = "key" if char == "]" else "list"
            return True
        try:
            item, self._at = _DECODER.raw_decode(self.text, self._at)
        except json.JSONDecodeError:
            return False  # not whole yet
        index = self._count
        self._count += 1
        try:
            subtask = check_part(item, index + 1)
            if len(self.parts) >= self.max_parts:
                raise ValueError(f"subtask {index + 1} is one too many: at most {self.max_parts}")
        except ValueError as error:
            skipped = Skipped(index, str(error))
            self.skipped.append(skipped)
            found.append(skipped)
            return True
        part = Part(index, subtask)
        self.parts.append(part)
        found.append(part)
        return True


def outline_problem(reader: PlanReader) -> str:
    """Why a finished outline gave no usable section, in words the brain is shown."""
    if reader.skipped:
        return "; ".join(skipped.reason for skipped in reader.skipped)
    try:
        data = json.loads(reader.text)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at position {error.pos})"
    listed = (
        next((data[key] for key in LIST_KEYS if key in data), None)
        if isinstance(data, dict)
        else None
    )
    if not isinstance(listed, list):
        return 'no "subtasks" list'
    return "0 sections: an outline needs at least 1"
