"""A neuron as the registry holds it: identity, live evidence, and the view users see.

:meth:`Neuron.view_data` builds the view as plain JSON-ready values: a thousand neurons list
in a few milliseconds that way, where validating a :class:`NeuronView` each took ten times
that. :class:`NeuronView` remains the view's schema (the API documents it, and a test holds
the two to the same shape)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import to_json, to_jsonable_python

from ganglion.fleet.speed import SpeedBook
from ganglion.fleet.status import Health, NeuronStatus, is_active
from ganglion.neurons.base import Dialect, ModelMemory, NeuronAdapter


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters (\\u0000)")
    return text


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string the store can keep: PostgreSQL's text cannot hold NUL characters."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
NAME_RULE = (
    "must be letters, digits, '.', '_' and '-', starting with a letter or digit, at most "
    "200 characters (e.g. gpu-box): a neuron's name goes into URLs, HTTP headers and metric labels"
)


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sorts ``n2`` before ``n10``: runs of digits compare as numbers."""
    return tuple(
        (1, int(part), "") if part.isdigit() else (0, 0, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )


def check_name(name: str) -> str:
    """``name`` when it can name a neuron, else :class:`ValueError` saying what can."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(NAME_RULE)
    return name


NeuronName = Annotated[
    str, AfterValidator(check_name), Field(json_schema_extra={"pattern": NAME_PATTERN})
]
"""A neuron's name, as :func:`check_name` allows."""


class NewNeuron(BaseModel):
    """A neuron to register: ``POST /fleet/neurons``, and ``[[neuron]]`` in a config file."""

    url: Text = Field(description="Base URL of the server, e.g. http://127.0.0.1:11434")
    name: NeuronName | None = Field(default=None, description="Defaults to HOST-PORT")
    api: Dialect | None = Field(default=None, description="Detected when not given")
    node: Text | None = Field(default=None, description="The machine it runs on; default: host")
    slots: int = Field(
        default=1, ge=1, le=256, description="Requests it runs at once (OLLAMA_NUM_PARALLEL)"
    )


class NeuronView(BaseModel):
    """One neuron as ``GET /fleet/neurons`` and ``ganglion neuron list --json`` show it."""

    name: str
    url: str
    api: Dialect
    node: str
    models: list[str]
    status: NeuronStatus
    is_active: bool
    reason: str | None
    tokens_per_second: float | None
    speeds: dict[str, float]
    prefill_speeds: dict[str, float]
    load_seconds: dict[str, float]
    in_flight: int
    slots: int
    loaded: list[str] | None
    memory: dict[str, dict[str, int]] | None = Field(
        default=None,
        description="Per loaded model, its size_bytes and how many of them are in VRAM "
        "(vram_bytes), when the server says (Ollama /api/ps)",
    )
    idle_gpu: str | None = Field(
        default=None,
        description="Why the node's GPU contributes nothing to this neuron (a model on the "
        "CPU), or null",
    )
    last_seen: datetime | None


@dataclass
class Neuron:
    """A registered neuron and everything known about it now."""

    id: int
    name: str
    url: str
    api: Dialect
    node: str
    models: list[str]
    adapter: NeuronAdapter
    health: Health = field(default_factory=Health)
    speeds: SpeedBook = field(default_factory=SpeedBook)
    status: NeuronStatus = NeuronStatus.ACTIVE
    reason: str | None = None
    last_seen: datetime | None = None
    loaded: list[str] | None = None
    memory: dict[str, ModelMemory] | None = None
    idle_gpu: str | None = None
    in_flight: int = 0
    slots: int = 1
    origin: str | None = None
    order: tuple[tuple[int, int, str], ...] = field(init=False, repr=False, compare=False)
    # The encoded view and what it was built from: one per neuron (see view_json).
    _view: tuple[tuple[object, ...], bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.order = natural_key(self.name)  # a name never changes; lists sort by this

    @property
    def is_active(self) -> bool:
        return is_active(self.status)

    def view(self) -> NeuronView:
        return NeuronView.model_validate(self.view_data())

    def view_json(self) -> bytes:
        """:meth:`view_data` as JSON, kept until something it shows changes: a listing of a
        thousand neurons, most unchanged since the last one, costs a comparison each."""
        key = self._view_key()
        if self._view is None or self._view[0] != key:
            self._view = (key, to_json(self.view_data()))
        return self._view[1]

    def _view_key(self) -> tuple[object, ...]:
        """What the view is built from, as values (copies of the lists, so that a change in
        place shows too)."""
        return (
            self.url,
            self.node,
            self.status,
            self.reason,
            self.in_flight,
            self.slots,
            self.idle_gpu,
            self.last_seen,
            self.speeds.version,
            tuple(self.models),
            None if self.loaded is None else tuple(self.loaded),
            None if self.memory is None else tuple(self.memory.items()),
        )

    def view_data(self) -> dict[str, Any]:
        """The :class:`NeuronView`, as the JSON-ready values it would dump to."""
        return {
            "name": self.name,
            "url": self.url,
            "api": self.api.value,
            "node": self.node,
            "models": list(self.models),
            "status": self.status.value,
            "is_active": self.is_active,
            "reason": self.reason,
            "tokens_per_second": _round(self.speeds.speed()),
            "speeds": _rounded(self.speeds.by_model()),
            "prefill_speeds": _rounded(self.speeds.prefill),
            "load_seconds": _rounded(self.speeds.loads),
            "in_flight": self.in_flight,
            "slots": self.slots,
            "loaded": None if self.loaded is None else list(self.loaded),
            "memory": None if self.memory is None else _memory(self.memory),
            "idle_gpu": self.idle_gpu,
            "last_seen": None if self.last_seen is None else to_jsonable_python(self.last_seen),
        }


def _memory(memory: dict[str, ModelMemory]) -> dict[str, dict[str, int]]:
    return {
        model: {"size_bytes": where.size_bytes, "vram_bytes": where.vram_bytes}
        for model, where in sorted(memory.items())
    }


def _rounded(by_model: dict[str, float]) -> dict[str, float]:
    return {model: round(figure, 2) for model, figure in by_model.items()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
