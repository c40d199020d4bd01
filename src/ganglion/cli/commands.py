"""The command modules, and the commands each registers. Each module has ``register(app)``.

A command line that names a command imports and registers only the module that has it
(:data:`COMMANDS`): Typer builds every registered command's parameters on each start, and
each module imports what its commands need. ``--help`` and a mistyped command register all.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Each top-level command and the module under ``ganglion.cli`` that registers it. Modules are
#: registered in this order (``--help`` lists single commands first, then groups).
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "neuron": "neuron",
    "run": "run",
    "runs": "run",
    "top": "top",
    "bench": "bench",
    "keys": "keys",
    "local": "local",
    "demo": "demo",
    "sim": "sim",
    "doctor": "doctor",
    "enlist": "doctor",
}


def modules_for(args: list[str]) -> list[ModuleType]:
    """The command modules a command line needs: the one that has its command, or all of them
    when it names none (``--help``, no arguments, a mistyped command)."""
    named = (
        [COMMANDS[args[0]]]
        if args and args[0] in COMMANDS
        else list(dict.fromkeys(COMMANDS.values()))
    )
    return [importlib.import_module(f"ganglion.cli.{name}") for name in named]
