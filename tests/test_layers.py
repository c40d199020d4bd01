"""The package graph runs one way (docs/concepts.md#the-layers): import-linter checks the
contracts in pyproject.toml against the source, and against a small tree made to break them,
so a contract that could never fail would show here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(config: Path, source: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(source)}
    return subprocess.run(
        [str(LINT), str(config), "--no-cache"],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        cwd=source.parent,
        timeout=120,
    )


def test_ganglion_keeps_its_import_contracts() -> None:
    result = lint(ROOT / "pyproject.toml", ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def mock_tree(root: Path, imports: dict[str, str]) -> Path:
    """A package ``mock`` with ganglion's layers and contracts, empty but for ``imports``
    (module path -> the import line it holds). Not named ``ganglion``: the installed
    ganglion would be found first."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    mocked = json.loads(re.sub(r"\bganglion\b", "mock", json.dumps(config)))
    source = root / "src"
    for layer in mocked["contracts"][0]["layers"]:
        for name in layer.split("|"):
            package = source.joinpath(*name.strip().split("."))
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").write_text("")
    for module, line in imports.items():
        path = source.joinpath(*module.split(".")).with_suffix(".py")
        path.write_text(line + "\n")
    lines = [  # JSON's strings, lists and booleans are TOML's too
        "[tool.importlinter]",
        *(f"{k} = {json.dumps(v)}" for k, v in mocked.items() if k != "contracts"),
    ]
    for contract in mocked["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in contract.items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return source


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    source = mock_tree(tmp_path, {"mock.wire.ollama": "import mock.gateway"})
    result = lint(tmp_path / "pyproject.toml", source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "mock.wire is not allowed to import mock.gateway" in result.stdout


def test_a_cycle_inside_a_package_breaks_the_graph(tmp_path: Path) -> None:
    source = mock_tree(
        tmp_path,
        {
            "mock.fleet.one": "import mock.fleet.two",
            "mock.fleet.two": "import mock.fleet.one",
        },
    )
    result = lint(tmp_path / "pyproject.toml", source)
    assert result.returncode == 1
    assert "No import cycle between the modules of a package BROKEN" in result.stdout
