"""Asking the brain for a plan, and refusing a plan that cannot be run.

The brain answers under a JSON-schema constraint (Ollama ``format``, OpenAI
``response_format``): a list of independent subtasks, each with the output it expects in
tokens. :func:`parse_plan` checks what came back; the run gives the brain one repair
attempt with the error, then answers directly and records why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MIN_EXPECTED_TOKENS = 16
MAX_EXPECTED_TOKENS = 1024


def plan_schema(max_subtasks: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "subtasks": {
                "type": "array",
                "minItems": 2,
                "maxItems": max_subtasks,
                "items": {
                    "type": "object",
                    "properties": {
                        "task": {"type": "string", "minLength": 1},
                        "expected_tokens": {
                            "type": "integer",
                            "minimum": MIN_EXPECTED_TOKENS,
                            "maximum": MAX_EXPECTED_TOKENS,
                        },
                    },
                    "required": ["task", "expected_tokens"],
                },
            }
        },
        "required": ["subtasks"],
    }


DECOMPOSE_SYSTEM = (
    "You plan work for a team of language models that work in parallel. Split the user's "
    "task into {low} to {high} independent subtasks that can be solved separately, with no "
    "subtask needing another's answer. For each, write the subtask as a complete "
    "instruction and estimate the length of its answer in tokens. Answer only with JSON."
)

SYNTHESIZE_SYSTEM = (
    "You combine the answers of parallel workers into one answer to the original task. "
    "Be complete and concise; do not mention the workers."
)


@dataclass(frozen=True)
class Subtask:
    task: str
    expected_tokens: int
    heading: str = ""  # the answer shows a stitched part under it

    def as_dict(self) -> dict[str, Any]:
        shown = {"task": self.task, "expected_tokens": self.expected_tokens}
        return shown | {"heading": self.heading} if self.heading else shown


class NotWorthIt(Exception):
    """Splitting is predicted to lose, or cannot go on: answer directly, for the reason
    given, with ``budget`` tokens when a plan said how much the answer needs (0: the run's
    ``answer_tokens``)."""

    def __init__(self, reason: str, budget: int = 0) -> None:
        super().__init__(reason)
        self.budget = budget


class PlanError(ValueError):
    """The brain's plan is unusable; the message says why (it is shown to the brain)."""


def decompose_messages(task: str, max_subtasks: int) -> list[dict[str, str]]:
    system = DECOMPOSE_SYSTEM.format(low=2, high=max_subtasks)
    return [{"role": "system", "content": system}, {"role": "user", "content": task}]


def repair_messages(
    task: str, max_subtasks: int, answer: str, error: PlanError
) -> list[dict[str, str]]:
    return [
        *decompose_messages(task, max_subtasks),
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"That plan is unusable: {error}. Answer again, fixed."},
    ]


def synthesize_messages(task: str, parts: list[tuple[str, str]]) -> list[dict[str, str]]:
    answers = "\n\n".join(
        f"Subtask {n}: {sub}\nAnswer: {answer}" for n, (sub, answer) in enumerate(parts, 1)
    )
    return [
        {"role": "system", "content": SYNTHESIZE_SYSTEM},
        {"role": "user", "content": f"Task: {task}\n\n{answers}"},
    ]


def parse_plan(text: str, max_subtasks: int) -> list[Subtask]:
    """The subtasks in ``text``, or :class:`PlanError` saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanError(f"not valid JSON ({error.msg} at position {error.pos})") from None
    items = data.get("subtasks") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise PlanError('no "subtasks" list')
    if len(items) > max_subtasks:
        raise PlanError(f"{len(items)} subtasks: at most {max_subtasks}")
    subtasks = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise PlanError(f"subtask {number} is not an object")
        task = item.get("task")
        if not isinstance(task, str) or not task.strip():
            raise PlanError(f"subtask {number} has no task text")
        expected = item.get("expected_tokens")
        if isinstance(expected, bool) or not isinstance(expected, int | float):
            raise PlanError(f"subtask {number} has no expected_tokens number")
        if not math.isfinite(expected):  # JSON's NaN, Infinity, or 1e999
            raise PlanError(f"subtask {number} has expected_tokens {expected}: give a count")
        size = min(max(int(expected), MIN_EXPECTED_TOKENS), MAX_EXPECTED_TOKENS)
        subtasks.append(Subtask(task.strip(), size))
    if len(subtasks) < 2:
        raise PlanError(f"{len(subtasks)} subtask(s): a plan needs at least 2")
    return subtasks
