"""Security properties of a real gateway process (``ganglion serve``) and its real store.

``test_auth.py`` checks the key rules in process; here each property is checked the way an
attacker or an operator meets it: over HTTP, in the database, in the logs, on a bind address
that is not loopback (inside a network namespace the test creates, named ``ggk...``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from ganglion.config import Settings
from ganglion.gateway.app import create_app
from ganglion.monitor.dashboard import STATIC
from tests.conftest import Proc, Spawner, free_port, keys_create, need, run_cli

# Everything else needs a key when keys are enforced: the page shell holds no fleet data,
# FastAPI's API description is the same for every gateway, and the probes (which carry no
# key) say only whether this gateway is alive and ready.
PUBLIC_ROUTES = {
    "/",
    "/monitor/{asset}",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/healthz",
    "/readyz",
}
MODEL = "sim-model"


@dataclass
class Secured:
    """A gateway started with ``--require-keys`` on SQLite, with one simulated neuron."""

    spawn: Spawner
    gateway: Proc
    sim: Proc
    db_path: Path
    admin: str
    user: str

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = self.gateway.url + path
        return httpx.request(method, url, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("secured")
    spawn = Spawner(tmp)
    db_path = tmp / "secured.db"
    db = f"sqlite:///{db_path}"
    admin, user = keys_create("admin", "ops", db), keys_create("user", "alice", db)
    try:
        sim = spawn.sim(200, model=MODEL)
        gateway = spawn.ganglion(
            "serve", "--port", "{port}", "--db", db, "--require-keys", ready_path="/fleet/neurons"
        )
        secured = Secured(spawn, gateway, sim, db_path, admin, user)
        added = secured.call("POST", "/fleet/neurons", admin, json={"url": sim.url, "name": "sim"})
        assert added.status_code == 201, added.text
        yield secured
    finally:
        spawn.close()


def names(secured: Secured) -> list[str]:
    return [n["name"] for n in secured.call("GET", "/fleet/neurons", secured.user).json()]


# who may do what


def test_every_route_but_the_page_shell_refuses_a_request_without_a_key(
    secured: Secured, tmp_path: Path
) -> None:
    """A new route is protected unless it is added to PUBLIC_ROUTES on purpose."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'routes.db'}"))
    routes = [
        (method, path)
        for path, methods in every_route(app.routes)
        for method in methods
        if path not in PUBLIC_ROUTES and method != "HEAD"
    ]
    assert len(routes) >= 27
    for method, path in routes:
        concrete = path.replace("{name}", "sim").replace("{run_id}", "0" * 12)
        response = secured.call(method, concrete)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")


def every_route(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """``(path, methods)`` of every route, also inside included routers (which FastAPI keeps
    as routers of their own in some versions)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from every_route(inner.routes, prefix + route.include_context.prefix)
        else:
            yield prefix + route.path, set(getattr(route, "methods", None) or ())


def test_changing_the_fleet_needs_an_admin_key(secured: Secured) -> None:
    """401 without a key, 403 with a user key (and nothing changes), done with an admin key."""
    other = secured.spawn.sim(200, model=MODEL)
    changes: list[tuple[str, str, dict[str, Any] | None, int]] = [
        ("POST", "/fleet/neurons", {"url": other.url, "name": "extra"}, 201),
        ("POST", "/fleet/neurons/extra/suspend", None, 200),
        ("POST", "/fleet/neurons/extra/resume", None, 200),
        ("POST", "/fleet/bench", {"neurons": ["extra"], "max_tokens": 8}, 200),
        ("DELETE", "/fleet/neurons/extra", None, 204),
    ]
    for method, path, body, done in changes:
        before = secured.call("GET", "/fleet/neurons", secured.admin).json()
        anonymous = secured.call(method, path, json=body)
        assert anonymous.status_code == 401, (path, anonymous.text)
        as_user = secured.call(method, path, secured.user, json=body)
        assert as_user.status_code == 403, (path, as_user.text)
        assert "admin API key" in as_user.json()["error"]
        after = secured.call("GET", "/fleet/neurons", secured.admin).json()
        assert [(n["name"], n["status"]) for n in after] == [
            (n["name"], n["status"]) for n in before
        ]
        as_admin = secured.call(method, path, secured.admin, json=body)
        assert as_admin.status_code == done, (path, as_admin.text)
    assert names(secured) == ["sim"]


def test_keys_are_managed_on_the_database_only(secured: Secured) -> None:
    """No HTTP route creates, lists or revokes keys, for any key: whoever manages keys needs
    the database itself (``ganglion keys --db``)."""
    paths = secured.call("GET", "/openapi.json").json()["paths"]
    assert not [path for path in paths if "key" in path.lower()]
    for method in ("GET", "POST", "DELETE"):
        response = secured.call(method, "/fleet/keys", secured.admin)
        assert response.status_code in (404, 405), response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False}),
        (
            "POST",
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        ),
        ("GET", "/v1/models", None),
        ("GET", "/api/tags", None),
    ],
)
def test_inference_takes_a_user_key(
    secured: Secured, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert secured.call(method, path, json=body).status_code == 401
    answer = secured.call(method, path, secured.user, json=body)
    assert answer.status_code == 200, answer.text
    assert MODEL in answer.text or "[sim]" in answer.text


# the dashboard and the event streams


def test_the_page_shell_is_public_and_everything_it_shows_needs_a_key(secured: Secured) -> None:
    page = httpx.get(secured.gateway.url + "/", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200
    assert page.content == (STATIC / "index.html").read_bytes()  # the shell: no fleet data
    run = secured.call(
        "POST", "/fleet/runs", secured.user, json={"task": "hi", "decompose": "never"}
    )
    assert run.status_code == 202, run.text
    run_id = run.json()["id"]
    wrong = f"gk_{secured.user[3:11]}_{'x' * 43}"
    for path in (
        "/fleet/neurons",
        "/fleet/neurons/sim",
        "/fleet/neurons/sim/history",
        "/fleet/runs",
        f"/fleet/runs/{run_id}",
        "/metrics",
    ):
        assert secured.call("GET", path).status_code == 401, path
        assert secured.call("GET", path, wrong).status_code == 401, path
        assert secured.call("GET", path, secured.user).status_code == 200, path
    for path in ("/fleet/events", f"/fleet/runs/{run_id}/events"):
        assert first_event(secured, path, None) == (401, None)
        assert first_event(secured, path, wrong) == (401, None)
        status, event = first_event(secured, path, secured.user)
        assert status == 200, path
        assert event is not None, path


def first_event(secured: Secured, path: str, key: str | None) -> tuple[int, str | None]:
    """The status of an event stream, and its first ``data:`` line."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.stream("GET", secured.gateway.url + path, headers=headers, timeout=60) as stream:
        if stream.status_code != 200:
            return stream.status_code, None
        for line in stream.iter_lines():
            if line.startswith("data:"):
                return 200, line
    return stream.status_code, None


# neuron URLs


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "give http://HOST:PORT"),
        ("ftp://127.0.0.1:21", "give http://HOST:PORT"),
        ("gopher://127.0.0.1:70", "give http://HOST:PORT"),
        ("javascript:alert(1)", "give http://HOST:PORT"),
        ("data:text/plain,hi", "give http://HOST:PORT"),
        ("http://", "give http://HOST:PORT"),
        ("http://:11434", "give http://HOST:PORT"),
        ("", "give http://HOST:PORT"),
        ("http://neuron:s3cret-pass@{sim}", "cannot carry credentials"),
        ("http://neuron@{sim}", "cannot carry credentials"),
        ("http://{sim}/?model=x", "query or fragment"),
    ],
)
def test_neuron_urls_are_plain_http_or_refused_and_nothing_is_stored(
    secured: Secured, url: str, words: str
) -> None:
    """Each URL that points at the running sim would register if it were not refused."""
    url = url.replace("{sim}", f"127.0.0.1:{secured.sim.port}")
    response = secured.call("POST", "/fleet/neurons", secured.admin, json={"url": url})
    assert response.status_code == 422, response.text
    assert words in response.json()["error"]
    assert "s3cret-pass" not in response.text  # a password given is not echoed
    assert names(secured) == ["sim"]
    with sqlite3.connect(secured.db_path) as conn:
        stored = [row[0] for row in conn.execute("SELECT url FROM neurons")]
    assert stored == [secured.sim.url]


def test_the_cli_says_so_in_one_line(secured: Secured) -> None:
    result = run_cli(
        "neuron",
        "add",
        "file:///etc/passwd",
        "--gateway",
        secured.gateway.url,
        "--api-key",
        secured.admin,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:")
    assert "give http://HOST:PORT" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


# binding beyond loopback


@dataclass
class Namespace:
    """A network namespace of the test's own, with one address that is not loopback."""

    name: str
    address: str = "10.77.0.1"
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def ganglion(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self.argv(sys.executable, "-m", "ganglion", *args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def start(self, log: Path, *args: str) -> None:
        argv = self.argv(sys.executable, "-m", "ganglion", *args)
        with log.open("ab") as out:
            self.started.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))

    def ask(self, url: str, requests: list[tuple[str, str | None]]) -> list[int]:
        """From inside the namespace: wait for ``url`` to answer, then GET each path with its
        key (or none); the statuses."""
        code = (
            "import httpx, json, sys, time\n"
            "url, requests = sys.argv[1], json.loads(sys.argv[2])\n"
            "deadline = time.monotonic() + 60\n"
            "while True:\n"
            "    try:\n"
            "        httpx.get(url + '/api/version', timeout=2); break\n"
            "    except httpx.TransportError:\n"
            "        if time.monotonic() > deadline: raise\n"
            "        time.sleep(0.2)\n"
            "print(json.dumps([httpx.get(url + path, timeout=30,\n"
            "    headers={'Authorization': f'Bearer {key}'} if key else {}).status_code\n"
            "    for path, key in requests]))\n"
        )
        result = subprocess.run(
            self.argv(sys.executable, "-c", code, url, json.dumps(requests)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        statuses: list[int] = json.loads(result.stdout)
        return statuses


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "network namespaces need root")
    space = Namespace(f"ggk{secrets.token_hex(4)}")
    subprocess.run(["ip", "netns", "add", space.name], check=True)
    try:
        subprocess.run(["ip", "-n", space.name, "link", "set", "lo", "up"], check=True)
        address = f"{space.address}/32"
        subprocess.run(["ip", "-n", space.name, "addr", "add", address, "dev", "lo"], check=True)
        yield space
    finally:
        for process in space.started:
            process.terminate()
            process.wait(15)
        subprocess.run(["ip", "netns", "del", space.name], check=False)


def test_a_non_loopback_bind_starts_only_with_an_admin_key(
    namespace: Namespace, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'public.db'}"
    user = keys_create("user", "alice", db)
    port = str(free_port())
    serve = ("serve", "--host", namespace.address, "--port", port, "--db", db)
    refused = namespace.ganglion(*serve)
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert message.startswith(f"error: refusing to bind {namespace.address}"), message
    assert "ganglion keys create --admin" in message
    assert "Traceback" not in refused.stderr

    admin = keys_create("admin", "ops", db)
    namespace.start(tmp_path / "gateway.log", *serve)
    url = f"http://{namespace.address}:{port}"
    statuses = namespace.ask(
        url,
        [
            ("/fleet/neurons", None),
            ("/api/tags", None),
            ("/metrics", None),
            ("/fleet/neurons", user),
            ("/api/tags", user),
            ("/fleet/neurons", admin),
        ],
    )
    assert statuses == [401, 401, 401, 200, 200, 200], (tmp_path / "gateway.log").read_text()


# secrets stay out of logs, outputs and the database


@pytest.mark.postgres
def test_no_key_or_database_password_reaches_a_log_or_an_output(
    spawn: Spawner, tmp_path: Path, fresh_postgres: str
) -> None:
    url = make_url(fresh_postgres)
    password = url.password
    assert isinstance(password, str)
    assert password
    outputs: list[str] = []  # everything a user or a log reader sees, but the keys printed once

    def cli(*args: str, key: str = "") -> subprocess.CompletedProcess[str]:
        result = run_cli(*args, env={"GANGLION_API_KEY": key})
        outputs.append(result.stdout + result.stderr)
        return result

    # keys create prints the key once, on stdout, on purpose: those outputs are not searched
    admin = keys_create("admin", "ops", fresh_postgres)
    user = keys_create("user", "alice", fresh_postgres)
    revoked = keys_create("user", "gone", fresh_postgres)
    keys = [admin, user, revoked]
    assert cli("keys", "revoke", revoked[3:11], "--db", fresh_postgres).returncode == 0
    assert cli("keys", "list", "--db", fresh_postgres).returncode == 0

    gateway = spawn.ganglion(
        "serve",
        "--port",
        "{port}",
        "--require-keys",
        "--log-level",
        "debug",
        ready_path="/fleet/neurons",
        env={"GANGLION_DATABASE_URL": fresh_postgres},
    )
    sim = spawn.sim(200, model=MODEL)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    wrong = f"gk_{user[3:11]}_{'x' * 43}"
    calls: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("POST", "/fleet/neurons", bearer(admin), {"url": sim.url, "name": "sim"}, 201),
        ("POST", "/api/chat", bearer(user), chat, 200),
        ("POST", "/api/chat", {"X-API-Key": user}, chat | {"stream": True}, 200),
        ("POST", "/v1/chat/completions", {"authorization": f"bearer {user}"}, chat, 200),
        ("GET", "/fleet/neurons", bearer(wrong), None, 401),
        ("GET", "/fleet/neurons", bearer(revoked), None, 401),
        ("GET", "/fleet/neurons", bearer("sk-" + user), None, 401),
        ("GET", "/fleet/neurons", {"X-API-Key": f"gk_00000000_{user[12:]}"}, None, 401),
        ("POST", "/fleet/neurons/sim/suspend", bearer(user), None, 403),
        ("GET", f"/fleet/neurons?api_key={user}", {}, None, 401),  # keys never go in URLs
        ("GET", f"/api/tags?key={admin}&token={user}", {}, None, 401),
    ]
    for method, path, headers, body, status in calls:
        response = httpx.request(method, gateway.url + path, headers=headers, json=body, timeout=60)
        assert response.status_code == status, (path, response.text)
        outputs.append(response.text)
    assert cli("neuron", "list", "--gateway", gateway.url, key=user).returncode == 0
    assert cli("neuron", "list", "--gateway", gateway.url, key=wrong).returncode == 1
    assert cli("neuron", "rm", "sim", "--gateway", gateway.url, key=user).returncode == 1

    # a wrong database password, distinctive enough to search for bare
    bad = url.set(password=f"ggk-{secrets.token_urlsafe(12)}").render_as_string(hide_password=False)
    for args in (("serve", "--port", str(free_port()), "--db", bad), ("keys", "list", "--db", bad)):
        failed = cli(*args)
        assert failed.returncode == 1
        assert "Traceback" not in failed.stderr

    gateway.stop()
    log = gateway.log.read_text()
    seen = "\n".join([log, *outputs])
    for key in keys:
        assert key not in seen
        assert key[12:] not in seen  # the secret part alone
    for form in (f":{password}@", f"password={password}", f"password='{password}'"):
        assert form not in seen
    assert str(make_url(bad).password) not in seen
    assert f"{url.username}:***@" in " ".join(log.split())  # the store named, password hidden
    assert '"GET /fleet/neurons?... HTTP/1.1" 401' in log  # requests are logged, not queries
    assert_keys_hashed_in(fresh_postgres, keys)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_keys_hashed_in(database: str, keys: list[str]) -> None:
    """No row of any table holds a key; the key table holds one hash for each."""
    import psycopg

    url = make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        assert "api_keys" in tables
        everything = "\n".join(
            str(row[0])
            for table in tables
            for row in conn.execute(f'SELECT t::text FROM "{table}" t')
        )
    assert everything.count("sha256$") == len(keys)
    for key in keys:
        assert key[12:] not in everything


def test_the_trace_log_level_is_not_offered() -> None:
    """uvicorn's trace level writes raw requests, query strings and all."""
    result = run_cli("serve", "--port", str(free_port()), "--log-level", "trace")
    assert result.returncode == 2
    assert "'trace' is not one of" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
