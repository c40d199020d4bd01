"""The dashboard in Debian's Chromium, driven by Playwright: live, accessible, at scale.

Screenshots land in ``test-artifacts/monitor/`` at the repository root.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn

from ganglion.config import Settings
from ganglion.gateway.app import create_app
from tests.conftest import Proc, Spawner, free_port, run_cli, wait_http
from tests.fakes import FakeFleet, FakeOllama
from tests.monitor.conftest import ARTIFACTS, Console

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

PROBE_INTERVAL = 0.5


def status_of(page: Page, name: str) -> str | None:
    return page.get_attribute(f'.gauge[data-neuron="{name}"]', "data-status")


def wait_status(page: Page, name: str, status: str, within: float) -> None:
    page.wait_for_selector(
        f'.gauge[data-neuron="{name}"][data-status="{status}"]', timeout=within * 1000
    )


# --- a real gateway and real simulated neurons


def register(gateway: Proc, sim: Proc, name: str, node: str) -> None:
    body = {"url": sim.url, "name": name, "node": node}
    response = httpx.post(f"{gateway.url}/fleet/neurons", json=body, timeout=10)
    assert response.status_code == 201, response.text


def test_live_minimap_against_real_processes(
    spawn: Spawner, db_url: str, browser_page: tuple[Page, Console]
) -> None:
    gateway = spawn.gateway(db_url, probe_interval=PROBE_INTERVAL)
    fast, mid, slow = spawn.sim(90), spawn.sim(24, model="qwen2.5:7b"), spawn.sim(8)
    register(gateway, fast, "rtx-4090", "gpu-box")
    register(gateway, mid, "gtx-1080", "gpu-box")
    register(gateway, slow, "xeon-cpu", "cpu-box")
    for _ in range(3):  # enough samples for each neuron's own baseline
        bench = httpx.post(f"{gateway.url}/fleet/bench", json={"max_tokens": 12}, timeout=60)
        assert bench.status_code == 200, bench.text

    page, console = browser_page
    page.goto(gateway.url)
    page.wait_for_selector("#live[data-state='live']", timeout=5000)
    page.wait_for_function("document.querySelectorAll('.gauge[data-neuron]').length === 3")
    for name in ("rtx-4090", "gtx-1080", "xeon-cpu"):
        assert status_of(page, name) == "active"
        label = page.get_attribute(f'.gauge[data-neuron="{name}"]', "aria-label") or ""
        assert "Active" in label
        assert page.get_attribute(f'.gauge[data-neuron="{name}"]', "tabindex") == "0"
    assert page.text_content('.gauge[data-neuron="rtx-4090"] .value') != "\u2013"
    assert page.locator(".node").count() == 2
    page.screenshot(path=ARTIFACTS / "fleet-live.png")

    slow.kill()
    wait_status(page, "xeon-cpu", "offline", within=5)
    assert "Offline" in (page.get_attribute('[data-neuron="xeon-cpu"]', "aria-label") or "")
    title = page.get_attribute('[data-neuron="xeon-cpu"]', "title") or ""
    assert "probes failed" in title
    assert status_of(page, "rtx-4090") == "active"
    page.hover('[data-neuron="xeon-cpu"]')
    page.wait_for_selector("#tooltip:not([hidden]) .tt-reason")
    page.screenshot(path=ARTIFACTS / "fleet-one-offline.png")

    spawn.sim(8, port=slow.port)
    wait_status(page, "xeon-cpu", "active", within=5)

    httpx.post(f"{gateway.url}/fleet/neurons/gtx-1080/suspend", timeout=10)
    wait_status(page, "gtx-1080", "suspended", within=2)

    # the keyboard: focus a gauge, open its details with Enter, close with Escape
    page.focus('[data-neuron="gtx-1080"]')
    page.keyboard.press("ArrowLeft")
    focused = page.evaluate("document.activeElement.dataset.neuron")
    assert focused != "gtx-1080"
    page.keyboard.press("Enter")
    page.wait_for_selector("#drawer:not([hidden]) #spark svg")
    assert page.text_content("#drawer-title") == focused
    page.screenshot(path=ARTIFACTS / "neuron-detail.png")
    page.keyboard.press("Escape")
    page.wait_for_selector("#drawer", state="hidden")
    assert page.evaluate("document.activeElement.dataset.neuron") == focused

    assert console.errors == []


def create_key(db_url: str, role: str) -> str:
    created = run_cli("keys", "create", f"--{role}", "--db", db_url)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def test_with_keys_enforced_the_page_asks_for_one(
    spawn: Spawner, db_url: str, browser_page: tuple[Page, Console]
) -> None:
    admin, user = create_key(db_url, "admin"), create_key(db_url, "user")
    gateway = spawn.gateway(db_url, env={"GANGLION_REQUIRE_KEYS": "true"})
    sim = spawn.sim(40)
    added = httpx.post(
        f"{gateway.url}/fleet/neurons",
        json={"url": sim.url, "name": "locked-box"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert added.status_code == 201, added.text
    assert httpx.get(f"{gateway.url}/fleet/events").status_code == 401
    history = httpx.get(f"{gateway.url}/fleet/neurons/locked-box/history")
    assert history.status_code == 401
    page_only = httpx.get(gateway.url, headers={"Accept": "text/html"})
    assert page_only.status_code == 200  # the page holds no fleet data

    page, console = browser_page
    page.goto(gateway.url)
    page.wait_for_selector("#key-dialog[open]")
    assert page.get_attribute("#live", "data-state") == "locked"
    assert page.locator(".gauge").count() == 0
    page.screenshot(path=ARTIFACTS / "key-dialog.png")
    page.fill("#key-input", user)
    page.click("#key-form button[type=submit]")
    wait_status(page, "locked-box", "active", within=5)
    page.wait_for_selector("#live[data-state='live']")
    page.click('[data-neuron="locked-box"]')  # the detail view's API calls carry the key too
    page.wait_for_selector("#drawer-models li:has-text('sim-model')")
    refused = [e for e in console.errors if "status of 401" in e]
    assert refused  # the page's first, keyless attempt
    assert console.errors == refused


# --- two hundred neurons, in-process behind a fake fleet


@dataclass
class ThreadedGateway:
    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def serve_in_thread(
    db: Path, fleet: FakeFleet, port: int | None = None, probe_interval_s: float = 1.0
) -> ThreadedGateway:
    """A gateway in this process, on a real port, whose neurons are ``fleet``'s fakes."""
    settings = Settings(database_url=f"sqlite:///{db}", probe_interval_s=probe_interval_s)
    port = port or free_port()
    config = uvicorn.Config(
        create_app(settings, transport=fleet.transport()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    gateway = ThreadedGateway(server, thread, f"http://127.0.0.1:{port}")
    wait_http(f"{gateway.url}/fleet/neurons", timeout=20)
    return gateway


@pytest.fixture
def big_fleet(tmp_path: Path) -> Iterator[tuple[ThreadedGateway, FakeFleet]]:
    fleet = FakeFleet()
    gateway = serve_in_thread(tmp_path / "big.db", fleet)
    yield gateway, fleet
    gateway.stop()


def test_the_page_reconnects_when_the_gateway_comes_back(
    tmp_path: Path, browser_page: tuple[Page, Console]
) -> None:
    fleet = FakeFleet()
    fleet.add("box:11434", tokens_per_second=40.0)
    gateway = serve_in_thread(tmp_path / "fleet.db", fleet)
    try:
        httpx.post(f"{gateway.url}/fleet/neurons", json={"url": "http://box:11434", "name": "box"})
        page, console = browser_page
        page.goto(gateway.url)
        wait_status(page, "box", "active", within=5)

        gateway.stop()
        page.wait_for_selector("#live[data-state='reconnecting']", timeout=5000)
        assert page.inner_text("#live").strip() == "Reconnecting…"
        page.screenshot(path=ARTIFACTS / "reconnecting.png")
        port = int(gateway.url.rsplit(":", 1)[1])
        gateway = serve_in_thread(tmp_path / "fleet.db", fleet, port=port)
        page.wait_for_selector("#live[data-state='live']", timeout=15000)
        httpx.post(f"{gateway.url}/fleet/neurons/box/suspend", timeout=10)
        wait_status(page, "box", "suspended", within=2)  # live again, without a reload
        page.close()
    finally:
        gateway.stop()
    # the browser logs the refused connections while the gateway was away; nothing else
    assert [error for error in console.errors if "ERR_" not in error] == []


GPUS = [("rtx-4090", 92.0), ("rtx-3090", 71.0), ("a4000", 44.0), ("p40", 19.0), ("cpu", 6.0)]


def fill(gateway: ThreadedGateway, fleet: FakeFleet) -> None:
    """20 nodes of 10 neurons each; a few offline, suspended and degraded."""
    offline: list[FakeOllama] = []
    slowed: list[tuple[str, FakeOllama]] = []
    suspended: list[str] = []
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        for index in range(200):
            node, slot = divmod(index, 10)
            kind, tps = GPUS[(node + slot) % len(GPUS)]
            hostport = f"n{node:02d}:{11434 + slot}"
            fake = fleet.add(hostport, tokens_per_second=tps * (0.9 + 0.02 * slot))
            name = f"{kind}-{node:02d}{slot}"
            body = {"url": f"http://{hostport}", "name": name, "node": f"node-{node:02d}"}
            assert client.post("/fleet/neurons", json=body).status_code == 201
            if index % 37 == 5:
                offline.append(fake)
            elif index % 41 == 7:
                suspended.append(name)
            elif index % 29 == 3:
                slowed.append((name, fake))
        for _ in range(3):  # a baseline for everyone
            assert client.post("/fleet/bench", json={"max_tokens": 16}).status_code == 200
        for fake in offline:
            fake.up = False
        for _, fake in slowed:  # far below their own baseline: degraded
            fake.tokens_per_second /= 6
        for _ in range(4):
            client.post("/fleet/bench", json={"neurons": [n for n, _ in slowed], "max_tokens": 16})
        for name in suspended:
            client.post(f"/fleet/neurons/{name}/suspend")


def test_two_hundred_neurons_stay_readable_and_responsive(
    big_fleet: tuple[ThreadedGateway, FakeFleet], browser_page: tuple[Page, Console]
) -> None:
    gateway, fleet = big_fleet
    fill(gateway, fleet)
    page, console = browser_page
    started = time.monotonic()
    page.goto(gateway.url)
    page.wait_for_function("document.querySelectorAll('.gauge[data-neuron]').length === 200")
    loaded_in = time.monotonic() - started
    assert loaded_in < 5, f"200 gauges took {loaded_in:.1f} s"
    assert page.locator(".node").count() == 20
    page.wait_for_selector(".gauge[data-status='offline']", timeout=5000)
    statuses = page.eval_on_selector_all(".gauge", "els => els.map(e => e.dataset.status)")
    assert {"active", "offline", "suspended", "degraded"} <= set(statuses)
    page.screenshot(path=ARTIFACTS / "fleet-200.png")

    # a change reaches one gauge among 200 within a second
    target = page.get_attribute(
        '.node[data-node="node-07"] .gauge[data-status="active"]', "data-neuron"
    )
    started = time.monotonic()
    httpx.post(f"{gateway.url}/fleet/neurons/{target}/suspend", timeout=10)
    wait_status(page, target, "suspended", within=1.0)
    assert time.monotonic() - started < 1.5

    # groups collapse (and the filter narrows) without losing the gauges
    page.click('.node[data-node="node-00"] .node-toggle')
    assert page.get_attribute('.node[data-node="node-00"] .node-toggle', "aria-expanded") == (
        "false"
    )
    page.fill("#filter", "rtx-4090")
    visible = page.eval_on_selector_all(
        ".gauge", "els => els.filter(e => e.offsetParent !== null).length"
    )
    assert 0 < visible < 200
    page.screenshot(path=ARTIFACTS / "fleet-200-filtered.png")
    assert console.errors == []
