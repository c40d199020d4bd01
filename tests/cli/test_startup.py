"""The CLI starts without the gateway's stack: ``--help``, ``neuron list`` and ``doctor`` load
no ORM, migrations, web server or web framework (``benchmarks/cli_start.py`` times them), and
``ganglion.config`` is a leaf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganglion.cli.commands import COMMANDS
from tests.conftest import Spawner, run_cli

HEAVY = {"sqlalchemy", "alembic", "uvicorn", "fastapi"}

# Runs ``ganglion ARGS`` in this interpreter, then writes the modules it loaded to a file.
WRAPPER = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["ganglion", *sys.argv[2:]]
try:
    runpy.run_module("ganglion", run_name="__main__")
except SystemExit as done:
    code = done.code
else:
    code = 0
with open(out, "w") as file:
    json.dump({"code": code, "modules": sorted(sys.modules)}, file)
"""


def loaded_by(tmp_path: Path, *args: str) -> set[str]:
    """The top-level packages ``ganglion ARGS`` loads."""
    return {name.split(".")[0] for name in modules_loaded_by(tmp_path, *args)}


def modules_loaded_by(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", WRAPPER, str(out), *args],
        capture_output=True,
        timeout=120,
        env=os.environ,
        check=False,
    )
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), result["code"]
    return set(result["modules"])


@pytest.mark.parametrize(
    "args", [("--help",), ("doctor", "--json"), ("neuron", "--help")], ids=" ".join
)
def test_commands_start_without_the_gateway_stack(tmp_path: Path, args: tuple[str, ...]) -> None:
    loaded = loaded_by(tmp_path, *args)
    assert "typer" in loaded  # the wrapper did run the CLI
    assert not loaded & HEAVY


def test_neuron_list_talks_to_a_gateway_without_its_stack(spawn: Spawner, tmp_path: Path) -> None:
    gateway = spawn.gateway(f"sqlite:///{tmp_path / 'g.db'}")
    loaded = loaded_by(tmp_path, "neuron", "list", "--json", "--gateway", gateway.url)
    assert "httpx" in loaded  # it did ask the gateway
    assert not loaded & HEAVY


def test_a_command_loads_only_its_own_module(tmp_path: Path) -> None:
    loaded = modules_loaded_by(tmp_path, "doctor", "--json")
    commands = {name for name in loaded if name.startswith("ganglion.cli.")}
    shared = {"ganglion.cli.commands", "ganglion.cli.options"}  # the lookup; common options
    assert commands - shared == {"ganglion.cli.doctor"}
    everything = modules_loaded_by(tmp_path, "--help")
    assert {f"ganglion.cli.{name}" for name in COMMANDS.values()} <= everything


def test_every_command_in_help_is_found_by_name() -> None:
    """``--help`` lists exactly the commands :data:`COMMANDS` maps to their modules, so that a
    new command cannot be left out of the lazy lookup."""
    result = run_cli("--help", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:", 1)[1].splitlines()
    assert sorted(line.split()[0] for line in listed if line.strip()) == sorted(COMMANDS)


def test_config_is_a_leaf() -> None:
    """Of ganglion, ``ganglion.config`` loads only the leaves: errors, defaults, net."""
    code = "import sys, ganglion.config; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    ours = {name for name in done.stdout.split() if name.startswith("ganglion")}
    leaves = {"ganglion.defaults", "ganglion.errors", "ganglion.net"}
    assert ours == {"ganglion", "ganglion.config", *leaves}


def test_sim_help_shows_the_sims_answer_length() -> None:
    """``--output-tokens`` shows its default in words (the simulator loads lazily): the same
    number the simulator uses."""
    from ganglion.local.sim import DEFAULT_OUTPUT_TOKENS

    result = run_cli("sim", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert f"[default: {DEFAULT_OUTPUT_TOKENS}]" in result.stdout
