"""``ganglion keys generate`` and ``keys import``: a key made outside the store (a
Kubernetes Secret), imported by every replica at start, lets a key-enforcing gateway start
and takes requests, and importing it again changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from ganglion.gateway.auth import KEY_PATTERN, key_prefix
from tests.conftest import Spawner, run_cli


def generate() -> str:
    result = run_cli("keys", "generate")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert KEY_PATTERN.fullmatch(key), key
    return key


def listed(db: str) -> list[dict[str, str]]:
    result = run_cli("keys", "list", "--json", "--db", db)
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, str]] = json.loads(result.stdout)
    return entries


def import_from_stdin(key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ganglion", "keys", "import", *args],
        input=key + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_imported_key_opens_a_gateway_that_requires_keys(
    spawn: Spawner, tmp_path: Path, db_url: str
) -> None:
    admin, user = generate(), generate()
    assert admin != user
    assert listed(db_url) == []  # generating stores nothing
    secret = tmp_path / "admin"
    secret.write_text(admin + "\n")  # as a mounted Secret may hold it
    for _ in range(2):  # each replica imports at start: the second changes nothing
        done = run_cli(
            "keys", "import", "--admin", "--name", "chart", "--file", str(secret), "--db", db_url
        )
        assert done.returncode == 0, done.stderr
        assert f"admin key chart (prefix {key_prefix(admin)}) is stored" in done.stderr
    assert import_from_stdin(user, "--user", "--db", db_url).returncode == 0
    entries = listed(db_url)
    assert [(e["name"], e["role"]) for e in entries] == [
        ("chart", "admin"),
        (f"user-{key_prefix(user)}", "user"),
    ]
    assert admin not in json.dumps(entries)

    gateway = spawn.ganglion(
        *("serve", "--port", "{port}", "--db", db_url, "--require-keys"), ready_path="/healthz"
    )
    neurons = f"{gateway.url}/fleet/neurons"
    assert httpx.get(neurons).status_code == 401
    assert httpx.get(neurons, headers={"Authorization": f"Bearer {user}"}).status_code == 200
    remove = httpx.delete(f"{neurons}/nothing", headers={"X-API-Key": admin})
    assert remove.status_code == 404  # allowed to change the fleet; there is no such neuron
    assert httpx.delete(f"{neurons}/nothing", headers={"X-API-Key": user}).status_code == 403


def test_import_mistakes_are_one_line_and_a_revoked_key_stays_revoked(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    bad = import_from_stdin("not-a-key", "--admin", "--db", db)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: not an API key")
    assert "not-a-key" not in bad.stderr

    key = generate()
    assert import_from_stdin(key, "--user", "--db", db).returncode == 0
    twin = f"gk_{key_prefix(key)}_{'x' * 43}"  # the same prefix, another secret
    clash = import_from_stdin(twin, "--user", "--db", db)
    assert clash.returncode == 1
    assert "already has the prefix" in clash.stderr

    assert run_cli("keys", "revoke", str(key_prefix(key)), "--db", db).returncode == 0
    again = import_from_stdin(key, "--user", "--db", db)
    assert again.returncode == 0
    assert "was revoked: left revoked" in again.stderr
    assert listed(db)[0]["revoked_at"] is not None
    neither = run_cli("keys", "import", "--db", db)
    assert (neither.returncode, "--admin" in neither.stderr) == (1, True)
