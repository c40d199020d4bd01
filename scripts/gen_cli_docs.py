"""Write docs/cli.md from the CLI's own ``--help``, or check that it is current (``--check``).

The reference is generated so that it cannot drift from the code; ``make test`` checks it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import typer.main
from typer import rich_utils
from typer.testing import CliRunner

from ganglion import cli

rich_utils.MAX_WIDTH = 100  # the same page whatever terminal generates it

TARGET = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def commands(group: Any, path: list[str]) -> list[list[str]]:
    """Every command path under ``group``. Typer vendors its own click, so groups are found
    by duck typing (an isinstance check against ``click.Group`` silently found none)."""
    found = [path]
    if hasattr(group, "list_commands"):
        for name in group.list_commands(click.Context(group)):
            sub = group.get_command(click.Context(group), name)
            if sub is not None and not sub.hidden:
                found += commands(sub, [*path, name])
    return found


def render() -> str:
    cli._register_all()
    root = typer.main.get_command(cli.app)
    runner = CliRunner()
    parts = [
        "# CLI reference\n",
        "Generated from `--help` by `scripts/gen_cli_docs.py` (`make docs`); do not edit.\n",
    ]
    for path in commands(root, []):
        result = runner.invoke(cli.app, [*path, "--help"], prog_name="ganglion")
        if result.exit_code != 0:
            raise SystemExit(f"ganglion {' '.join(path)} --help failed: {result.output}")
        title = " ".join(["ganglion", *path])
        body = "\n".join(line.rstrip() for line in result.output.strip().splitlines())
        parts.append(f"## `{title}`\n\n```text\n{body}\n```\n")
    return "\n".join(parts)


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            raise SystemExit("docs/cli.md is out of date with --help: run `make docs`")
        return
    TARGET.write_text(text)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
