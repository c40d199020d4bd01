"""API keys: in-process through the app, then a real ``ganglion serve --require-keys``.

Nothing here binds or talks to anything but 127.0.0.0/8: the public-bind rule is tested as
preflight's decision (:func:`check_keys`), and its refusal in ``tests/cli``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ganglion.config import Settings
from ganglion.errors import ConfigError
from ganglion.gateway.app import create_app
from ganglion.gateway.auth import (
    KeyBook,
    Role,
    create_key,
    hash_key,
    key_prefix,
    key_row,
    new_key,
    verify_key,
)
from ganglion.gateway.server import check_keys
from ganglion.store import Store
from ganglion.store.schema import ApiKeyRow
from tests.conftest import Spawner, keys_create, run_cli
from tests.fakes import FakeFleet


@dataclass
class Keyed:
    client: httpx.AsyncClient
    store: Store
    admin: str
    user: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Keyed]:
    fleet = FakeFleet()
    fleet.add("gpu:11434", tokens_per_second=90.0)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = Store.open(url)
    admin, _ = create_key(store, Role.ADMIN, "ops")
    user, _ = create_key(store, Role.USER, "alice")
    app = create_app(Settings(database_url=url, require_keys=True), transport=fleet.transport())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Keyed(client, store, admin, user)
    store.close()


# the keys


def test_keys_have_the_documented_shape_and_only_a_salted_hash_is_kept() -> None:
    prefix, key = new_key()
    assert key.startswith(f"gk_{prefix}_")
    assert len(prefix) == 8
    assert len(key.split("_", 2)[2]) >= 32
    assert key_prefix(key) == prefix
    first, second = hash_key(key), hash_key(key)
    assert first != second  # a salt per key
    assert key not in first
    assert first.startswith("sha256$")
    assert verify_key(key, first)
    assert verify_key(key, second)
    assert not verify_key(key[:-1] + ("A" if key[-1] != "A" else "B"), first)
    assert not verify_key(key, "md5$00$00")


@pytest.mark.parametrize(
    "text", ["", "gk_", "gk_xyz_secret", "sk-openai-style", "gk_0011aabb_short"]
)
def test_malformed_keys_have_no_prefix(text: str) -> None:
    assert key_prefix(text) is None


class CountingStore(Store):
    """A real store that counts its key reads."""

    reads = 0

    def api_key(self, prefix: str) -> ApiKeyRow | None:
        self.reads += 1
        return super().api_key(prefix)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_key_book_reads_a_key_again_once_its_row_is_recheck_s_old(
    tmp_path: Path,
) -> None:
    store = CountingStore.open(f"sqlite:///{tmp_path / 'g.db'}")
    clock = Clock()
    book = KeyBook(store, recheck_s=1.0, clock=clock)
    try:
        _, row = create_key(store, Role.USER)
        assert (await book.row(row.prefix)) is not None
        clock.now += 0.9
        held = await book.row(row.prefix)
        assert (store.reads, held is not None and held.revoked_at is None) == (1, True)
        store.revoke_api_key(row.prefix)
        clock.now += 0.1  # 1 s after the read: read again, and refused from now on
        again = await book.row(row.prefix)
        assert (store.reads, again is not None and again.revoked_at is not None) == (2, True)
    finally:
        store.close()


async def test_the_key_book_remembers_no_miss_and_with_0_reads_every_time(
    tmp_path: Path,
) -> None:
    store = CountingStore.open(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        book = KeyBook(store, recheck_s=1.0, clock=Clock())
        prefix, key = new_key()
        assert (await book.row(prefix)) is None
        assert store.add_api_key(key_row(key, prefix, Role.USER, None)) is not None
        assert (await book.row(prefix)) is not None  # a key made later works at once
        assert store.reads == 2
        every_time = KeyBook(store, recheck_s=0.0, clock=Clock())
        for _ in range(2):
            assert (await every_time.row(prefix)) is not None
        assert store.reads == 4  # 0: the store every time, even at the same instant
    finally:
        store.close()


# in process


async def test_no_key_is_401_and_says_how_to_send_one(keyed: Keyed) -> None:
    for method, path in [
        ("GET", "/fleet/neurons"),
        ("POST", "/fleet/neurons"),
        ("GET", "/metrics"),
        ("GET", "/api/tags"),
    ]:
        response = await keyed.client.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in response.json()["error"]


async def test_a_user_key_reads_and_an_admin_key_changes(keyed: Keyed) -> None:
    client, user, admin = keyed.client, keyed.auth(keyed.user), keyed.auth(keyed.admin)
    body = {"url": "http://gpu:11434", "name": "gpu"}
    assert (await client.get("/fleet/neurons", headers=user)).json() == []
    refused = await client.post("/fleet/neurons", json=body, headers=user)
    assert refused.status_code == 403
    assert "admin" in refused.json()["error"]
    assert (await client.post("/fleet/neurons", json=body, headers=admin)).status_code == 201
    assert [n["name"] for n in (await client.get("/fleet/neurons", headers=user)).json()] == ["gpu"]
    assert (await client.post("/fleet/neurons/gpu/suspend", headers=user)).status_code == 403
    assert (await client.delete("/fleet/neurons/gpu", headers=user)).status_code == 403
    suspended = await client.post("/fleet/neurons/gpu/suspend", headers=admin)
    assert suspended.json()["status"] == "suspended"
    assert (await client.get("/metrics", headers=user)).status_code == 200


async def test_x_api_key_and_lowercase_bearer_work(keyed: Keyed) -> None:
    for headers in (
        {"X-API-Key": keyed.user},
        {"authorization": f"bearer {keyed.user}"},
    ):
        assert (await keyed.client.get("/fleet/neurons", headers=headers)).status_code == 200


async def test_wrong_malformed_and_revoked_keys_are_401(keyed: Keyed) -> None:
    client = keyed.client
    prefix = key_prefix(keyed.user)
    assert prefix is not None
    wrong_secret = f"gk_{prefix}_{'x' * 43}"
    unknown_prefix = f"gk_00000000_{keyed.user.split('_', 2)[2]}"
    for key in (wrong_secret, unknown_prefix, "not-a-key", keyed.user + "x"):
        response = await client.get("/fleet/neurons", headers=keyed.auth(key))
        assert response.status_code == 401, key
        assert "not valid" in response.json()["error"]
        assert key not in response.text  # never echoed
    assert (await client.get("/fleet/neurons", headers=keyed.auth(keyed.user))).status_code == 200
    keyed.store.revoke_api_key(prefix)
    await asyncio.sleep(Settings().key_recheck_s)  # the row the gateway holds is read again
    revoked = await client.get("/fleet/neurons", headers=keyed.auth(keyed.user))
    assert revoked.status_code == 401


async def test_the_default_loopback_gateway_needs_no_key(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'g.db'}"), probe=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
            assert (await client.get("/fleet/neurons")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200


# preflight's decision


@pytest.mark.parametrize(
    ("host", "require", "keys", "refusal"),
    [
        ("127.0.0.1", False, [], None),
        ("127.0.0.2", False, [], None),  # all of 127/8 is loopback
        ("0.0.0.0", False, [], r"refusing to bind 0\.0\.0\.0: .*ganglion keys create --admin"),
        ("192.168.1.10", False, ["user"], "refusing to bind 192.168.1.10"),
        ("0.0.0.0", False, ["revoked-admin"], "refusing to bind"),
        ("0.0.0.0", False, ["admin"], None),
        ("127.0.0.1", True, [], "--require-keys needs an admin API key"),
        ("127.0.0.1", True, ["admin"], None),
    ],
)
def test_preflight_wants_an_admin_key_wherever_keys_are_enforced(
    tmp_path: Path, host: str, require: bool, keys: list[str], refusal: str | None
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'g.db'}", host=host, require_keys=require
    )
    store = Store.open(settings.database_url)
    try:
        for kind in keys:
            _, row = create_key(store, Role.USER if kind == "user" else Role.ADMIN)
            if kind == "revoked-admin":
                store.revoke_api_key(row.prefix)
        if refusal is None:
            check_keys(settings, store)
        else:
            with pytest.raises(ConfigError, match=refusal):
                check_keys(settings, store)
    finally:
        store.close()


# a real gateway and the CLI


@dataclass
class Cli:
    gateway: str

    def __call__(self, *args: str, key: str = "") -> tuple[int, str]:
        result = run_cli(*args, "--gateway", self.gateway, env={"GANGLION_API_KEY": key})
        output = result.stdout + result.stderr
        assert "Traceback" not in output
        return result.returncode, output


def test_keys_through_a_real_gateway_and_the_cli(spawn: Spawner, tmp_path: Path) -> None:
    db_path = tmp_path / "keys.db"
    db = f"sqlite:///{db_path}"
    admin, user = keys_create("admin", "ops", db), keys_create("user", "alice", db)
    gateway = spawn.ganglion(
        "serve", "--port", "{port}", "--db", db, "--require-keys", ready_path="/fleet/neurons"
    )
    sim = spawn.sim(50)
    cli = Cli(gateway.url)

    code, out = cli("neuron", "list")
    assert (code, "needs an API key" in out) == (1, True)
    code, out = cli("neuron", "add", sim.url, "--name", "sim", key=user)
    assert (code, "admin API key" in out) == (1, True)
    assert cli("neuron", "add", sim.url, "--name", "sim", key=admin)[0] == 0
    code, out = cli("neuron", "list", key=user)
    assert (code, "sim" in out) == (0, True)
    assert cli("neuron", "suspend", "sim", key=user)[0] == 1
    assert cli("neuron", "suspend", "sim", key=admin)[0] == 0
    code, out = cli("neuron", "list", key=f"gk_{key_prefix(user)}_{'x' * 43}")
    assert (code, "not valid" in out) == (1, True)

    _assert_listing_hides_keys(db, admin, user)
    revoked = run_cli("keys", "revoke", str(key_prefix(user)), "--db", db)
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(Settings().key_recheck_s)  # the gateway reads a key again at most this late
    code, out = cli("neuron", "list", key=user)
    assert (code, "not valid" in out) == (1, True)
    assert cli("neuron", "list", key=admin)[0] == 0
    _assert_only_hashes_stored(db_path, admin, user)


def _assert_listing_hides_keys(db: str, *keys: str) -> None:
    listed = run_cli("keys", "list", "--db", db)
    assert listed.returncode == 0
    assert "alice" in listed.stdout
    assert "ops" in listed.stdout
    as_json = run_cli("keys", "list", "--json", "--db", db).stdout
    assert {entry["name"] for entry in json.loads(as_json)} == {"ops", "alice"}
    for shown in (listed.stdout, as_json):
        assert "sha256$" not in shown
        for key in keys:
            assert key.split("_", 2)[2] not in shown


def _assert_only_hashes_stored(db_path: Path, *keys: str) -> None:
    """Every byte of the database (and its journal or write-ahead log, if any) holds the
    hashes and never a key."""
    with sqlite3.connect(db_path) as conn:
        hashes = [row[0] for row in conn.execute("SELECT key_hash FROM api_keys")]
    assert len(hashes) == len(keys)
    assert all(stored.startswith("sha256$") for stored in hashes)
    files = [db_path, *db_path.parent.glob(f"{db_path.name}-*")]
    stored = b"".join(path.read_bytes() for path in files)
    assert hashes[0].encode() in stored  # the bytes searched are the ones the rows live in
    for key in keys:
        assert key.split("_", 2)[2].encode() not in stored
        assert key.encode() not in stored


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("keys", "create"), "--admin"),
        (("keys", "create", "--admin", "--user"), "--admin"),
        (("keys", "revoke", "0badc0de"), "no API key with prefix '0badc0de'"),
    ],
)
def test_key_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    result = run_cli(*args, "--db", f"sqlite:///{tmp_path / 'k.db'}")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("error:")
    assert words in " ".join(message.split())
    assert "Traceback" not in result.stderr
