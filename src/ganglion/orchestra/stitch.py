"""The stitched answer: an opening, the parts in plan order under their headings, a closing.

The opening is written from the task by a worker while the brain writes the outline (the
first paragraph of what a direct answer would say, from the same prompt); the
closing by the brain from the outline while the parts are being written. Nothing rewrites
the parts, so the answer costs no second pass. :class:`Stitcher` puts the pieces in order as
they come, and hands out each piece of text the moment everything before it is out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ganglion.orchestra.plan import MIN_EXPECTED_TOKENS

#: What the pieces around the parts cost, in tokens: together at most about 15% of an answer.
OPENING_TOKENS = 32
OPENING_STOP = ["\n\n"]
CLOSING_TOKENS = 24
#: What writing the outline costs the brain: ``{"subtasks": [`` and then each entry, a
#: heading of at most :data:`HEADING_WORDS` words between quotes. Every entry's part waits for
#: the entries before it, so a short heading starts every part sooner.
OUTLINE_PREFIX_TOKENS = 5
OUTLINE_ENTRY_TOKENS = 6
HEADING_WORDS = 5
HEADING_CHARS = 48
WORDS_PER_TOKEN = 0.75

OPENING = ("opening", 0)
CLOSING = ("closing", 0)


def part_key(index: int) -> tuple[str, int]:
    return ("part", index)


def outline_schema(parts: int) -> dict[str, Any]:
    """The outline: a list of short section headings, each naming what its section covers."""
    heading = {"type": "string", "minLength": 1, "maxLength": HEADING_CHARS}
    return {
        "type": "object",
        "properties": {
            "subtasks": {"type": "array", "minItems": 1, "maxItems": parts, "items": heading}
        },
        "required": ["subtasks"],
    }


def outline_budget(parts: int) -> int:
    """The most the outline may cost: a cap, not a forecast. A heading may take a token a
    character (and a small model pads JSON with whitespace); the stream is closed as soon as
    every planned part runs, so a brain that writes less costs less."""
    return 4 * OUTLINE_PREFIX_TOKENS + parts * (HEADING_CHARS + 4 * OUTLINE_ENTRY_TOKENS)


def outline_messages(task: str, parts: int) -> list[dict[str, str]]:
    system = (
        f"You plan an answer that {parts} writers will write at the same time, one section "
        f"each. Give exactly {parts} section headings, in the order the answer should have "
        f"them, each of 2 to {HEADING_WORDS} words naming what its section covers, so that "
        "no two sections overlap and together they answer the task. Answer only with JSON."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": task}]


def part_messages(
    task: str, headings: Sequence[str], index: int, planned: int, tokens: int
) -> list[dict[str, str]]:
    """Section ``index`` of the answer, with the outline so far and the section's place."""
    outline = "\n".join(f"{n}. {heading}" for n, heading in enumerate(headings, 1))
    more = f" (of {planned}; more to come)" if planned > len(headings) else ""
    words = max(int(tokens * WORDS_PER_TOKEN), MIN_EXPECTED_TOKENS)
    system = (  # short: every part waits for its prompt to be read
        "Others write the other sections at the same time. Write only yours: no heading, "
        "no introduction or conclusion, nothing another section covers."
    )
    user = (
        f"Write section {index + 1}, {headings[index]!r}, in about {words} words.\n\n"
        f"Task: {task}\n\nThe answer's sections{more}:\n{outline}"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def opening_messages(task: str) -> list[dict[str, str]]:
    """The direct answer's prompt, word for word: the answer's first token waits for this
    prompt to be read, so it is read no slower than a direct answer's. The opening is that
    answer's first paragraph (:data:`OPENING_STOP`), at most :data:`OPENING_TOKENS`."""
    return [{"role": "user", "content": task}]


def closing_messages(task: str, headings: Sequence[str]) -> list[dict[str, str]]:
    outline = "\n".join(f"{n}. {heading}" for n, heading in enumerate(headings, 1))
    system = (
        "Write one sentence that closes an answer made of the sections listed: a short "
        "conclusion, without repeating them and without a heading."
    )
    user = f"Task: {task}\n\nThe sections:\n{outline}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def heading_text(heading: str) -> str:
    return f"\n\n## {heading}\n\n"


@dataclass
class Stitcher:
    """Pieces of the answer keyed ``OPENING``, ``part_key(i)``, ``CLOSING``, written out in
    that order: the opening as it grows, each part whole (under its heading) once it and
    everything before it are done, then the closing. Parts are announced one by one
    (:meth:`expect`); :meth:`seal` says no more will come."""

    emit: Callable[[str], None]
    _text: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    _done: set[tuple[str, int]] = field(default_factory=set)
    _parts: list[int] = field(default_factory=list)
    _sealed: bool = False
    _out: int = 0  # pieces written out whole
    _sent: int = 0  # characters of the current piece written out
    written: list[str] = field(default_factory=list)

    def _order(self) -> list[tuple[str, int]]:
        return [OPENING, *(part_key(i) for i in sorted(self._parts)), CLOSING]

    def expect(self, index: int, heading: str) -> None:
        """A part will come, under ``heading``."""
        if index not in self._parts:
            self._parts.append(index)
            self._text[part_key(index)] = [heading_text(heading)]
        self._flush()

    def add(self, key: tuple[str, int], text: str, *, done: bool = False) -> None:
        self._text.setdefault(key, []).append(text)
        if done:
            self._done.add(key)
        self._flush()

    def seal(self) -> None:
        self._sealed = True
        self._flush()

    @property
    def text(self) -> str:
        return "".join(self.written).strip()

    @property
    def complete(self) -> bool:
        return self._sealed and self._out == len(self._order())

    def _flush(self) -> None:
        order = self._order()
        while self._out < len(order):
            key = order[self._out]
            if key == CLOSING and not self._sealed:
                return
            if key[0] == "part" and key not in self._done:
                return  # a part goes out whole, heading and all: it may yet fail for good
            text = "".join(self._text.get(key, []))
            if len(text) > self._sent:
                self._write(text[self._sent :])
                self._sent = len(text)
            if key not in self._done:
                return
            self._out += 1
            self._sent = 0

    def _write(self, text: str) -> None:
        if not self.written and not text.strip():
            return
        self.written.append(text)
        self.emit(text)
