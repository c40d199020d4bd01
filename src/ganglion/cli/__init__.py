"""The ``ganglion`` command line: one module per command group, each with ``register(app)``.

The CLI is a client of the gateway's HTTP API (as ``ollama`` and ``kubectl`` are), except for
the commands that start processes (``serve``, ``sim``, ``local``, ``demo``) or read this
machine (``doctor``).
"""

from __future__ import annotations

import sys

import typer

from ganglion.errors import ConfigFileError, GanglionError

app = typer.Typer(
    name="ganglion",
    help="One brain, many neurons: run LLM work across every machine you own.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Keeps ``ganglion`` a group of commands when only one of them is registered."""


def _register(args: list[str]) -> None:
    from ganglion.cli.commands import modules_for

    for module in modules_for(args):
        module.register(app)


def _register_all() -> None:
    _register([])


def main() -> None:
    """Entry point: run the CLI, turning any :class:`GanglionError` into one line and exit 1
    (2 for an invalid config file, a usage error like a bad flag)."""
    _register(sys.argv[1:])
    try:
        app()
    except GanglionError as error:
        from rich.console import Console
        from rich.markup import escape

        said = escape(str(error))  # a message may quote [[neuron]] or [brackets]
        Console(stderr=True).print(f"[bold red]error:[/] {said}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(error, ConfigFileError) else 1)
