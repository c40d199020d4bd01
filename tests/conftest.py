"""Shared test helpers: real processes on loopback, and the rule for missing parts.

Under ``CI=true`` a missing required part (PostgreSQL, the llama.cpp server, Chromium) fails
the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

IN_CI = os.environ.get("CI") == "true"


def need(ok: bool, why: str) -> None:
    """Skip (or, in CI, fail) when a required part is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"a required part is missing in CI: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(
    url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class Proc:
    """A child process serving HTTP on ``port``."""

    args: list[str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ready_path: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> Proc:
        """Launch, and wait until it answers."""
        self.launch()
        return self.wait(timeout)

    def launch(self) -> None:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            self.args, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        handle.close()

    def wait(self, timeout: float = 30.0) -> Proc:
        """Return once ``ready_path`` answers; raise with the log's tail if it never does."""
        try:
            wait_http(self.url + self.ready_path, timeout, self.process)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}\n--- log ---\n{self.log.read_text()[-3000:]}") from None
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Spawner:
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def ganglion(
        self,
        *args: str,
        port: int | None = None,
        ready_path: str = "/",
        env: dict[str, str] | None = None,
    ) -> Proc:
        port = port or free_port()
        argv = [sys.executable, "-m", "ganglion", *[a.replace("{port}", str(port)) for a in args]]
        log = self.tmp / f"proc-{len(self.procs)}-{port}.log"
        proc = Proc(argv, port, log, ready_path=ready_path, env=env or {})
        self.procs.append(proc)
        return proc.start()

    def sim(
        self,
        tps: float,
        *,
        model: str = "sim-model",
        port: int | None = None,
        extra: tuple[str, ...] = (),
    ) -> Proc:
        return self.ganglion(
            "sim",
            "--port",
            "{port}",
            "--model",
            model,
            "--tps",
            str(tps),
            *extra,
            port=port,
            ready_path="/api/version",
        )

    def gateway(
        self,
        db_url: str,
        *,
        probe_interval: float = 0.5,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        return self.ganglion(
            "serve",
            "--port",
            "{port}",
            "--db",
            db_url,
            "--probe-interval",
            str(probe_interval),
            port=port,
            ready_path="/fleet/neurons",
            env=env,
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path)
    yield spawner
    spawner.close()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``ganglion ARGS`` as a user would, capturing output."""
    return subprocess.run(
        [sys.executable, "-m", "ganglion", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def keys_create(role: str, name: str, db: str) -> str:
    """``ganglion keys create --ROLE``: the key it prints once (on stdout; the notice on stderr)."""
    result = run_cli("keys", "create", f"--{role}", "--name", name, "--db", db)
    assert result.returncode == 0, result.stderr
    assert "not shown again" in result.stderr
    key = result.stdout.strip()
    assert key.startswith("gk_"), key
    assert key not in result.stderr
    return key


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("GANGLION_TEST_POSTGRES_URL", "")
    need(bool(url), "GANGLION_TEST_POSTGRES_URL is not set (make test sets it)")
    try:
        import psycopg

        with psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5
        ):
            pass
    except Exception as error:  # any failure to connect means the part is missing
        need(False, f"PostgreSQL at {url} is not reachable: {error}")
    return url


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database of its own (dropped after the test), so suites
    running side by side on one server never see each other's rows."""
    import psycopg
    from sqlalchemy.engine import make_url

    from ganglion.config import normalize_database_url

    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"ganglion_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield normalize_database_url(
        make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


STORE = os.environ.get("GANGLION_TEST_STORE", "sqlite")
"""The store the gateways of the end-to-end tests use. ``make test`` runs the suite on SQLite,
then again with ``GANGLION_TEST_STORE=postgresql`` over the tests that use ``db_url``."""


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store for this test's gateways, of the kind ``GANGLION_TEST_STORE`` names."""
    if STORE == "postgresql":
        url: str = request.getfixturevalue("fresh_postgres")
        return url
    return f"sqlite:///{tmp_path / 'ganglion.db'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STORE not in ("sqlite", "postgresql"):
        raise pytest.UsageError(f"GANGLION_TEST_STORE={STORE!r}: give sqlite or postgresql")
    if STORE == "postgresql":  # the PostgreSQL pass: only the tests whose store it changes
        kept = [item for item in items if "db_url" in getattr(item, "fixturenames", ())]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind in turn: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'ganglion.db'}"  # a folder to create too
    url: str = request.getfixturevalue("fresh_postgres")
    return url
