"""What a run asks for: the task, the models, and how it may be split."""

from __future__ import annotations

from dataclasses import dataclass

from ganglion.errors import ConfigError
from ganglion.orchestra.schedule import SCHEDULE_POLICIES

DIRECT_TOKENS = 512  # the budget of an answer when the request gives none
DECOMPOSE_MODES = ("auto", "always", "never")
SYNTHESES = ("stitch", "rewrite")


@dataclass(frozen=True)
class RunRequest:
    task: str
    model: str | None = None
    brain: str | None = None
    policy: str = "speed"
    max_subtasks: int = 4
    decompose: str = "auto"
    synthesis: str = "stitch"
    answer_tokens: int = DIRECT_TOKENS

    def check(self) -> None:
        if not self.task.strip():
            raise ConfigError("the task is empty: give the task to run as text")
        if self.policy not in SCHEDULE_POLICIES:
            raise ConfigError(
                f"unknown policy {self.policy!r}: choose one of {', '.join(SCHEDULE_POLICIES)}"
            )
        if self.decompose not in DECOMPOSE_MODES:
            raise ConfigError(
                f"unknown decompose mode {self.decompose!r}: choose one of "
                f"{', '.join(DECOMPOSE_MODES)}"
            )
        if not 2 <= self.max_subtasks <= 32:
            raise ConfigError(f"max_subtasks is {self.max_subtasks}: give 2 to 32")
        if self.synthesis not in SYNTHESES:
            raise ConfigError(
                f"unknown synthesis {self.synthesis!r}: choose one of {', '.join(SYNTHESES)}"
            )
        if not 64 <= self.answer_tokens <= 8192:
            raise ConfigError(f"answer_tokens is {self.answer_tokens}: give 64 to 8192")
