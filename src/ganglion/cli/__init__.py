"""The ``ganglion`` command line: one module per command group, each with ``register(app)``.

The CLI is a client of the gateway's HTTP API (as ``ollama`` and ``kubectl`` are), except for
the commands that start processes (``serve``, ``sim``, ``local``, ``demo``) or read this
machine (``doctor``).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from ganglion.errors import ConfigFileError, GanglionError

app = typer.Typer(
    name="ganglion",
    help="One brain, many neurons: run LLM work across every machine you own.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register_all() -> None:
    from ganglion.cli import commands

    for module in commands.MODULES:
        module.register(app)


def main() -> None:
    """Entry point: run the CLI, turning any :class:`GanglionError` into one line and exit 1
    (2 for an invalid config file, a usage error like a bad flag)."""
    _register_all()
    try:
        app()
    except GanglionError as error:
        said = escape(str(error))  # a message may quote [[neuron]] or [brackets]
        Console(stderr=True).print(f"[bold red]error:[/] {said}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(error, ConfigFileError) else 1)
