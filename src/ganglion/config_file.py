"""The gateway's config file (``ganglion serve --config FILE``, ``GANGLION_CONFIG``): TOML.

Top-level keys are :class:`~ganglion.config.Settings` fields by their own names; each
``[[neuron]]`` table is a neuron to register at start (``url``, and optionally ``name``,
``api``, ``node``, ``slots``, as ``ganglion neuron add`` takes them)::

    port = 11435
    database_url = "sqlite:////var/lib/ganglion/ganglion.db"

    [[neuron]]
    name = "gpu"
    url = "http://gpu-box:11434"

Every mistake (TOML syntax, an unknown key, a wrong type, a bad value, a bad neuron URL) is
a :class:`~ganglion.errors.ConfigFileError` that names the file and the line:
``ganglion.toml:7: port should be less than or equal to 65535 (got 70000)``.

:func:`load_gateway_settings` builds ``ganglion serve``'s :class:`~ganglion.config.Settings`
with the file. It sits above :mod:`ganglion.config` (a leaf), so it can make the checks that
need the layers in between: the routing policy against
:data:`ganglion.routing.ROUTING_POLICIES`, each ``[[neuron]]`` against
:class:`~ganglion.fleet.neuron.NewNeuron` and the neuron-URL rules of :mod:`ganglion.net`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ganglion.config import Settings, load_settings
from ganglion.errors import ConfigError, ConfigFileError, GanglionError, phrase
from ganglion.fleet.neuron import NewNeuron
from ganglion.net import default_name, normalize_url
from ganglion.routing import ROUTING_POLICIES

NEURON_TABLE = "neuron"
ALIASES = {"dialect": "api", "neurons": "neuron", "db": "database_url", "policy": "routing_policy"}
_KEY = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")
_HEADER = re.compile(r"\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]")
_TOML_WHERE = re.compile(r"\(at line (\d+), column \d+\)$")

Where = tuple[int | None, str]  # (None: top level, or the index of a [[neuron]]; a key)
Fail = Callable[[Where, str], ConfigFileError]


@dataclass(frozen=True)
class ConfigFile:
    """A config file, read and checked: ``settings`` as :class:`Settings` takes them,
    ``neurons`` to register."""

    path: Path
    settings: dict[str, Any]
    neurons: list[NewNeuron]


def load_gateway_settings(config: Path | None = None, **overrides: object) -> Settings:
    """:func:`~ganglion.config.load_settings` with the config file ``config`` (flags, then
    environment, then file, then defaults), and the routing policy checked.

    A mistake in the file is a :class:`ConfigFileError` naming its line; any other
    validation failure becomes one :class:`ConfigError` line naming the setting.
    """
    file = None
    if config is not None:
        read = read_config(config, Settings)
        file = {**read.settings, "neurons": read.neurons}
    settings = load_settings(file, **overrides)
    if problem := _unknown_policy(settings.routing_policy):
        raise ConfigError(problem)
    return settings


def _unknown_policy(value: object) -> str | None:
    if value in ROUTING_POLICIES:
        return None
    return f"unknown routing policy {value!r}: choose one of {', '.join(sorted(ROUTING_POLICIES))}"


def read_config(path: Path, settings_model: type[BaseModel]) -> ConfigFile:
    """Read and check ``path``: every value is validated against ``settings_model`` (the
    :class:`~ganglion.config.Settings` class), so a mistake is named with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot read the config file ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: the config file is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = _TOML_WHERE.search(str(error))
        message = _TOML_WHERE.sub("", str(error)).strip()
        line = f":{found.group(1)}" if found else ""
        raise ConfigFileError(f"{path}{line}: not valid TOML: {message}") from None
    lines = _key_lines(text)

    def fail(where: Where, message: str) -> ConfigFileError:
        line = lines.get(where) or lines.get((where[0], ""))
        return ConfigFileError(f"{path}{f':{line}' if line else ''}: {message}")

    allowed = set(settings_model.model_fields) - {"neurons"}
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key == NEURON_TABLE:
            continue
        if key not in allowed:
            raise fail((None, key), f"unknown setting {key!r}{_suggest(key, allowed)}")
        problem = _check(settings_model, key, value)
        if not problem and key == "routing_policy":
            problem = _unknown_policy(value)
        if problem:
            raise fail((None, key), problem)
        settings[key] = value
    tables = data.get(NEURON_TABLE, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise fail((None, NEURON_TABLE), "write each neuron as a [[neuron]] table")
    neurons = [_neuron(table, index, fail) for index, table in enumerate(tables)]
    _no_twins(neurons, fail)
    return ConfigFile(path, settings, neurons)


def _neuron(table: dict[str, Any], index: int, fail: Fail) -> NewNeuron:
    fields = set(NewNeuron.model_fields)
    for key, value in table.items():
        if key not in fields:
            raise fail((index, key), f"unknown neuron key {key!r}{_suggest(key, fields)}")
        problem = _check(NewNeuron, key, value)
        if problem:
            raise fail((index, key), f"neuron {problem}")
    if "url" not in table:
        raise fail((index, ""), 'this [[neuron]] has no url: add url = "http://HOST:PORT"')
    try:
        normalize_url(table["url"])
    except GanglionError as error:
        raise fail((index, "url"), str(error)) from None
    return NewNeuron.model_validate(table)


def _no_twins(neurons: list[NewNeuron], fail: Fail) -> None:
    """Two ``[[neuron]]`` tables may share neither a name nor a URL."""
    seen: dict[str, int] = {}
    for index, neuron in enumerate(neurons):
        url = normalize_url(neuron.url)
        for key, value in (("url", url), ("name", neuron.name or default_name(url))):
            first = seen.setdefault(f"{key}={value}", index)
            if first != index:
                raise fail(
                    (index, key),
                    f"{key} {value!r} is already an earlier [[neuron]]'s: each needs its own",
                )


def _check(model: type[BaseModel], key: str, value: object) -> str | None:
    """What is wrong with ``value`` for the field ``key`` of ``model``, or None. Only that
    field is validated (the environment is not read), so the message is the file's."""
    try:
        model.__pydantic_validator__.validate_assignment(model.model_construct(), key, value)
    except ValidationError as error:
        return phrase(key, error.errors()[0]["msg"], value)
    except GanglionError as error:  # the model's own validators say what to do
        return str(error)
    return None


def _key_lines(text: str) -> dict[Where, int]:
    """The line of each key, at the top level and in each ``[[neuron]]`` table (``""``: the
    table's header). Other tables are keys of the top level, at their header's line."""
    lines: dict[Where, int] = {}
    table: int | None = None
    neurons = -1
    for number, line in enumerate(text.splitlines(), 1):
        if header := _HEADER.match(line):
            name = header.group(1)
            if name == NEURON_TABLE and line.strip().startswith("[["):
                neurons += 1
                table = neurons
                lines[(table, "")] = number
            else:  # another table: a top-level key, whose own keys are not
                lines.setdefault((None, name.split(".")[0]), number)
                table = -1
        elif (key := _KEY.match(line)) and table != -1:
            lines.setdefault((table, key.group(1).strip("\"'")), number)
    return lines


def _suggest(key: str, known: set[str]) -> str:
    close = [ALIASES[key]] if key in ALIASES else difflib.get_close_matches(key, sorted(known), n=1)
    return f": did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(known))})"
