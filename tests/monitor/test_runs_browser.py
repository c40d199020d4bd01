"""The Runs section in Debian's Chromium, driven by Playwright, against real processes: a
gateway and four simulated neurons (the brain among them, with a scripted plan).

Screenshots land in ``test-artifacts/monitor/`` at the repository root.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import Proc, Spawner
from tests.monitor.conftest import ARTIFACTS, Console

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

SUBTASKS = 6
TOKENS = 80  # each subtask: 2 s at 40 tok/s
BARS = "#gantt [data-delegation]"
TALL = {"width": 1440, "height": 1180}
TIMES = "\u00d7"  # the speed-up's sign


def scripted_plan(count: int, tokens: int) -> str:
    planets = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
    subtasks = [
        {
            "task": f"Describe {planets[n % len(planets)]} in three sentences",
            "expected_tokens": tokens,
        }
        for n in range(count)
    ]
    return json.dumps({"subtasks": subtasks})


def sim_fleet(spawn: Spawner, db_url: str) -> Proc:
    gateway = spawn.gateway(db_url, probe_interval=1)
    plan = scripted_plan(SUBTASKS, TOKENS)
    for index in range(4):
        sim = spawn.sim(40, model="llama3", extra=("--structured-reply", plan))
        body = {"url": sim.url, "name": f"sim-{index}", "node": "sim-rack"}
        assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201
    bench = httpx.post(f"{gateway.url}/fleet/bench", json={"max_tokens": 16}, timeout=120)
    assert bench.status_code == 200, bench.text
    return gateway


def bar_width(page: Page, index: int) -> float:
    width: str = page.get_attribute(f'{BARS}[data-delegation="{index}"] .body', "width") or "0"
    return float(width)


def bar_span(page: Page, bar: str) -> tuple[float, float]:
    """Where a bar (``opening``, ``closing``, ``d0``…) begins and ends on the chart, in px."""
    where = (
        f'#gantt [data-phase="{bar}"]' if bar[0] != "d" else f'{BARS}[data-delegation="{bar[1:]}"]'
    )
    body = page.locator(f"{where} .body")
    left = float(body.get_attribute("x") or 0)
    return left, left + float(body.get_attribute("width") or 0)


def test_a_run_is_followed_live_from_plan_to_answer(
    spawn: Spawner, db_url: str, browser_page: tuple[Page, Console]
) -> None:
    gateway = sim_fleet(spawn, db_url)
    page, console = browser_page
    page.set_viewport_size(TALL)  # the fleet and the run in one screenshot
    page.goto(gateway.url)
    page.wait_for_selector("#live[data-state='live']", timeout=5000)
    assert page.is_visible("#runs-empty")

    body = {"task": "Describe the planets", "max_subtasks": SUBTASKS, "decompose": "always"}
    body["synthesis"] = "rewrite"  # the chart of the rewrite path: queued bars, synthesis
    started: dict[str, Any] = httpx.post(f"{gateway.url}/fleet/runs", json=body).json()
    row = f'.run-row[data-run="{started["id"]}"]'
    page.wait_for_selector(row, timeout=5000)
    assert "Describe the planets" in page.inner_text(row)
    page.focus(row)  # the keyboard opens it too
    page.keyboard.press("Enter")
    assert page.get_attribute(row, "aria-current") == "true"
    page.wait_for_selector("#run:not([hidden])")

    while_running(page)
    page.screenshot(path=ARTIFACTS / "run-live.png")
    once_done(page, row, f"{gateway.url}/fleet/runs/{started['id']}")
    page.mouse.move(0, 0)
    page.screenshot(path=ARTIFACTS / "run-done.png")
    on_the_keyboard(page)
    assert console.errors == []


def while_running(page: Page) -> None:
    """Every delegation is on the chart; a bar grows while its neuron works."""
    page.wait_for_function(f"document.querySelectorAll('{BARS}').length === {SUBTASKS}")
    active = page.wait_for_selector(f'{BARS}[data-status="active"]', timeout=15000)
    assert active is not None
    index = int(active.get_attribute("data-delegation") or -1)
    before = bar_width(page, index)
    page.wait_for_timeout(400)
    if page.get_attribute(f'{BARS}[data-delegation="{index}"]', "data-status") == "active":
        assert bar_width(page, index) > before
    assert page.locator(f'{BARS}[data-status="pending"]').count() > 0  # queued behind
    assert page.locator('#gantt [data-phase="decompose"]').count() == 1
    page.wait_for_timeout(300)


def once_done(page: Page, row: str, run_url: str) -> None:
    """All completed (live, without a reload); the brain's two phases; LB and speed-up."""
    page.wait_for_function(
        f"document.querySelectorAll('{BARS}[data-status=\"completed\"]').length === {SUBTASKS}",
        timeout=60000,
    )
    page.wait_for_selector(f'{row}[data-status="completed"]', timeout=30000)
    page.wait_for_selector("#run-pill:has-text('Completed')")
    assert page.locator(BARS).count() == SUBTASKS
    assert page.locator('#gantt [data-phase="synthesize"]').count() == 1
    view = httpx.get(run_url).json()
    assert view["schedule"]["lower_bound_s"] is not None
    page.wait_for_selector("#gantt .mark-lb", state="attached")
    shown_lb = re.search(r"LB (\d+\.?\d*) s", page.inner_text("#gantt"))
    assert shown_lb is not None
    assert float(shown_lb[1]) == pytest.approx(view["schedule"]["lower_bound_s"], abs=0.051)
    assert "achieved" in page.inner_text("#gantt")
    assert "Lower bound" in page.inner_text("#run-figures")
    for where in ("#run-figures", row):  # the run's figures, and the list
        speedup = re.search(rf"{TIMES}(\d+\.\d+)", page.inner_text(where))
        assert speedup is not None
        assert float(speedup[1]) == pytest.approx(view["speedup_estimate"], abs=0.0051)
    label = page.get_attribute(f'{BARS}[data-delegation="0"]', "aria-label") or ""
    assert "Completed" in label
    assert "Describe Mercury" in label
    page.wait_for_selector("#run-answer-box:not([hidden])")


def on_the_keyboard(page: Page) -> None:
    """One tab stop for the chart; arrows move between delegations, each with a tooltip."""
    page.focus(f'{BARS}[data-delegation="0"]')
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.delegation") == "1"
    page.wait_for_selector("#tooltip:not([hidden]):has-text('Delegation #1')")
    assert page.locator('#gantt .bar[tabindex="0"]').count() == 1
    page.keyboard.press("Escape")
    page.wait_for_selector("#tooltip", state="hidden")


def test_a_direct_run_shows_its_reason(
    spawn: Spawner, db_url: str, browser_page: tuple[Page, Console]
) -> None:
    gateway = sim_fleet(spawn, db_url)
    body = {"task": "Name a planet", "decompose": "never"}
    started: dict[str, Any] = httpx.post(f"{gateway.url}/fleet/runs", json=body).json()
    deadline = time.monotonic() + 60
    while httpx.get(f"{gateway.url}/fleet/runs/{started['id']}").json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    page, console = browser_page
    page.goto(gateway.url)
    page.wait_for_selector(f'.run-row[data-run="{started["id"]}"][aria-current="true"]')
    page.wait_for_selector("#run-reason:not([hidden])")
    assert "decomposition was turned off" in page.inner_text("#run-reason")
    assert page.locator(BARS).count() == 0
    assert page.locator('#gantt [data-phase="parallel"]').count() == 1
    page.locator("#runs").screenshot(path=ARTIFACTS / "run-direct.png")
    assert console.errors == []


def test_a_stitched_run_shows_its_parts_overlapping_the_plan(
    spawn: Spawner, db_url: str, browser_page: tuple[Page, Console]
) -> None:
    gateway = sim_fleet(spawn, db_url)
    body = {"task": "Describe the planets", "max_subtasks": 4, "decompose": "always"}
    started: dict[str, Any] = httpx.post(f"{gateway.url}/fleet/runs", json=body).json()
    deadline = time.monotonic() + 120
    while (view := httpx.get(f"{gateway.url}/fleet/runs/{started['id']}").json())[
        "status"
    ] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert (view["status"], view["synthesis"]) == ("completed", "stitch")
    first_part = min(d["start_s"] for d in view["delegations"])
    assert first_part < view["timeline"]["decompose"]["end_s"]  # the record says they overlap

    page, console = browser_page
    page.set_viewport_size(TALL)
    page.goto(gateway.url)
    page.wait_for_selector(f'.run-row[data-run="{started["id"]}"][aria-current="true"]')
    page.wait_for_selector(f"{BARS}", state="attached")
    plan = page.locator('#gantt [data-phase="decompose"] .body')
    plan_end = float(plan.get_attribute("x") or 0) + float(plan.get_attribute("width") or 0)
    starts = [
        float(page.get_attribute(f'{BARS}[data-delegation="{d["index"]}"] .body', "x") or 0)
        for d in view["delegations"]
    ]
    assert min(starts) < plan_end  # and the chart draws them overlapping
    opening, closing = bar_span(page, "opening"), bar_span(page, "closing")
    assert opening[0] < plan_end  # the opening is written while the outline streams
    assert closing[0] < max(bar_span(page, f"d{d['index']}")[1] for d in view["delegations"])
    line = view["timeline"]
    assert line["opening"]["start_s"] < line["decompose"]["end_s"]
    assert line["closing"]["start_s"] < max(d["end_s"] for d in view["delegations"])
    outline = page.get_attribute('#gantt [data-phase="decompose"]', "aria-label") or ""
    assert outline.startswith("Outline")
    assert (page.get_attribute('#gantt [data-phase="opening"]', "aria-label") or "").startswith(
        "Opening"
    )
    page.wait_for_selector("#gantt .mark-first", state="attached")
    shown = re.search(r"first token (\d+\.?\d*) s", page.inner_text("#gantt"))
    assert shown is not None
    assert float(shown[1]) == pytest.approx(view["timings"]["first_token_s"], abs=0.051)
    page.locator("#runs").screenshot(path=ARTIFACTS / "run-stitched.png")
    assert console.errors == []
