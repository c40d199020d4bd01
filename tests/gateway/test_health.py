"""``/healthz`` and ``/readyz``: real ``ganglion serve`` processes on the store of the pass
(SQLite, then PostgreSQL), a fake Kubernetes API for discovery, and the app in process for
what a probe must never do (send traffic to a neuron)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config

from ganglion.defaults import LogLevel
from ganglion.errors import StoreError
from ganglion.gateway.health import StoreCheck, discovery_problem
from ganglion.gateway.server import QuietProbes, log_config
from ganglion.store import create_store_engine, migrate
from ganglion.store.db import MIGRATIONS, newest_revision, schema_revisions
from tests.conftest import Proc, Spawner, free_port, keys_create
from tests.fakes import FakeFleet, in_process
from tests.fleet.test_discovery import FakeKubernetes, kubeconfig


def readyz(gateway: Proc) -> httpx.Response:
    return httpx.get(f"{gateway.url}/readyz", timeout=10)


def until_ready(gateway: Proc, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (answer := readyz(gateway)).status_code != 200:
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, (answer.text, gateway.log.read_text()[-3000:])
        time.sleep(0.2)
    body: dict[str, Any] = answer.json()
    return body


def downgrade_one(db_url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "-1")
    finally:
        engine.dispose()


# end to end: a real gateway that requires keys, as in a cluster


def test_probes_need_no_key_where_everything_else_does(spawn: Spawner, db_url: str) -> None:
    key = keys_create("admin", "ops", db_url)
    gateway = spawn.ganglion(
        *("serve", "--port", "{port}", "--db", db_url, "--require-keys"), ready_path="/healthz"
    )
    alive = httpx.get(f"{gateway.url}/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "alive"})
    ready = until_ready(gateway)
    assert ready == {"ready": True, "store": None, "migrations": None, "discovery": None}
    assert httpx.get(f"{gateway.url}/fleet/neurons").status_code == 401
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    with_key = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {key}"})
    assert with_key.status_code == 200
    assert "ganglion_requests_total{" not in with_key.text


def test_readyz_fails_while_the_schema_is_behind_this_release(spawn: Spawner, db_url: str) -> None:
    gateway = spawn.gateway(db_url)
    until_ready(gateway)
    downgrade_one(db_url)  # as if an older release had rolled the store back

    behind = readyz(gateway)
    assert behind.status_code == 503
    body = behind.json()
    assert (body["ready"], body["store"], body["discovery"]) == (False, None, None)
    assert f"this gateway needs {newest_revision()}" in body["migrations"]
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # alive all the same

    engine = create_store_engine(db_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    assert until_ready(gateway)["ready"] is True


def test_readyz_waits_until_kubernetes_discovery_has_listed_once(
    spawn: Spawner, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeKubernetes().start()
    try:
        api.fail_lists = 10**6  # the API server answers 500 until the test says otherwise
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", api.url)))
        gateway = spawn.ganglion(
            *("serve", "--port", "{port}", "--db", db_url, "--discover", "kubernetes"),
            ready_path="/healthz",
        )
        waiting = readyz(gateway)
        assert waiting.status_code == 503
        assert waiting.json()["discovery"] == "not synced yet: kubernetes"
        assert waiting.json()["store"] is None

        api.fail_lists = 0
        assert until_ready(gateway)["discovery"] is None
        assert api.lists >= 2  # it failed, backed off, listed again
    finally:
        api.close()


# in process: what a probe does not do


async def test_probes_send_nothing_to_a_neuron_and_count_as_no_traffic(tmp_path: Path) -> None:
    fleet = FakeFleet()
    gpu = fleet.add("gpu:11434")
    async with in_process(fleet, tmp_path / "g.db") as (app, client):
        await app.state.gateway.registry.add("http://gpu:11434", name="gpu")
        gpu.log.clear()
        for _ in range(5):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
        assert gpu.log == []
        metrics = (await client.get("/metrics")).text
        assert "ganglion_requests_total{" not in metrics
        chat = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        assert (await client.post("/api/chat", json=chat)).status_code == 200
        assert "/api/chat" in gpu.log  # the same fleet does see real traffic
        assert "ganglion_requests_total{" in (await client.get("/metrics")).text


# the checks themselves


def test_an_unreachable_store_is_named_without_its_address_in_the_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    engine = create_store_engine(f"postgresql://ganglion:s3cret@127.0.0.1:{port}/nowhere")
    try:
        with pytest.raises(StoreError, match="does not answer") as raised:
            schema_revisions(engine)
        assert "s3cret" not in str(raised.value)
        store, migrations = asyncio.run(StoreCheck()(engine))
    finally:
        engine.dispose()
    assert store == "the store does not answer (the gateway's log says why)"
    assert migrations is None
    assert f"127.0.0.1:{port}" in caplog.text  # the operator sees where, in the log


def test_a_store_that_hangs_is_not_ready_within_the_time_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = threading.Event()

    def hang(engine: object) -> tuple[str, str]:
        release.wait(30)
        return "x", "x"

    monkeypatch.setattr("ganglion.gateway.health.schema_revisions", hang)
    engine = create_store_engine(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        store, _ = asyncio.run(StoreCheck(timeout_s=0.05)(engine))
    finally:
        release.set()
        engine.dispose()
    assert store == "the store did not answer within 0.05 s"


class Source:
    def __init__(self, source: str, synced: bool) -> None:
        self.source, self.synced = source, synced

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def test_discovery_is_ready_once_every_source_has_synced() -> None:
    assert discovery_problem(None) == "the gateway is still starting"
    assert discovery_problem([]) is None
    both = [Source("config file", True), Source("kubernetes", False)]
    assert discovery_problem(both) == "not synced yet: kubernetes"
    assert discovery_problem([Source("config file", True)]) is None


def access_line(path: str, status: int) -> logging.LogRecord:
    args = ("10.42.0.1:5123", "GET", path, "1.1", status)
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None
    )


def test_passing_probes_leave_no_access_log_line_and_failing_ones_do() -> None:
    quiet = QuietProbes()
    assert not quiet.filter(access_line("/healthz", 200))
    assert not quiet.filter(access_line("/readyz", 200))
    assert quiet.filter(access_line("/readyz", 503))  # a replica not ready is news
    assert quiet.filter(access_line("/api/chat", 200))
    config = log_config(LogLevel.INFO)
    assert "quiet_probes" in config["handlers"]["access"]["filters"]
