"""A thousand neurons in Debian's Chromium: every gauge drawn, in natural name order, a big
node group across the whole width, and a burst of live changes drawn in one DOM update.

How long the page takes to paint is measured by ``benchmarks/dashboard.py``, not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from ganglion.fleet.neuron import natural_key
from tests.fakes import FakeFleet
from tests.monitor.conftest import ARTIFACTS, VIEWPORT, Console
from tests.monitor.test_dashboard_browser import ThreadedGateway, serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

BIG_NODE, BIG = "rack-a", 900
SMALL_NODES, SMALL = 10, 10  # node-1 ... node-10, ten neurons each
PAINTED_WITHIN_MS = 120_000  # a bound on waiting, generous for a loaded CI machine


@pytest.fixture
def thousand(tmp_path: Path) -> Iterator[ThreadedGateway]:
    """A gateway whose 1,000 neurons are fakes; its probes wait (every 10 minutes)."""
    fleet = FakeFleet()
    gateway = serve_in_thread(tmp_path / "thousand.db", fleet, probe_interval_s=600)
    body = []
    for index in range(BIG):
        fleet.add(f"a{index}:11434")
        body.append({"url": f"http://a{index}:11434", "name": f"n{index}", "node": BIG_NODE})
    for node in range(1, SMALL_NODES + 1):
        for slot in range(SMALL):
            fleet.add(f"b{node}-{slot}:11434")
            name = f"node-{node}-{slot}"
            body.append(
                {"url": f"http://b{node}-{slot}:11434", "name": name, "node": f"node-{node}"}
            )
    added = httpx.post(f"{gateway.url}/fleet/neurons", json=body[::-1], timeout=600)
    assert added.status_code == 201, added.text[:500]
    yield gateway
    gateway.stop()


def gauge_names(page: Page, node: str) -> list[str]:
    selector = f'.node[data-node="{node}"] .gauge'
    names: list[str] = page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.neuron)")
    return names


def test_a_thousand_neurons_in_natural_order_across_the_width(
    thousand: ThreadedGateway, browser_page: tuple[Page, Console]
) -> None:
    page, console = browser_page
    page.goto(thousand.url)
    page.wait_for_function(
        "document.querySelectorAll('.gauge[data-neuron]').length === 1000",
        timeout=PAINTED_WITHIN_MS,
    )
    assert page.evaluate("document.body.dataset.density") == "compact"

    big = gauge_names(page, BIG_NODE)
    assert big == sorted(big, key=natural_key)
    assert big[:3] == ["n0", "n1", "n2"]
    assert big.index("n2") < big.index("n10") < big.index("n100")
    nodes = page.eval_on_selector_all(".node", "els => els.map(e => e.dataset.node)")
    assert nodes == sorted(nodes, key=natural_key)
    assert nodes.index("node-2") < nodes.index("node-10")

    width = VIEWPORT["width"]
    big_box = page.locator(f'.node[data-node="{BIG_NODE}"]').bounding_box()
    small_box = page.locator('.node[data-node="node-1"]').bounding_box()
    assert big_box is not None
    assert small_box is not None
    assert big_box["width"] > 0.9 * width  # a big group spans the window
    assert small_box["width"] < 0.5 * width  # small ones share a row
    compact_label = page.inner_text('.gauge[data-neuron="node-3-7"] .name')
    assert compact_label == "7"  # its node's name is the group's head
    page.screenshot(path=ARTIFACTS / "fleet-1000.png")
    assert console.errors == []


def test_a_burst_of_changes_is_drawn_in_one_update(
    thousand: ThreadedGateway, browser_page: tuple[Page, Console]
) -> None:
    """Five hundred events handed over in one go (as a busy stream does): one DOM update,
    and it shows the last state of each gauge."""
    page, console = browser_page
    page.goto(thousand.url)
    page.wait_for_function(
        "document.querySelectorAll('.gauge[data-neuron]').length === 1000",
        timeout=PAINTED_WITHIN_MS,
    )
    view = httpx.get(f"{thousand.url}/fleet/neurons/n7", timeout=30).json()
    view["best_tokens_per_second"] = None
    flushes = page.evaluate(
        """view => {
          const before = window.synapse.flushes();
          for (let i = 1; i <= 500; i++) {
            const name = `n${i % 250}`;
            window.synapse.emit("neuron", { ...view, name, in_flight: i % 3, status: "degraded" });
          }
          return new Promise(done => {
            const wait = () => window.synapse.flushes() > before
              ? requestAnimationFrame(() => done(window.synapse.flushes() - before))
              : setTimeout(wait, 50);
            wait();
          });
        }""",
        view,
    )
    assert flushes == 1
    degraded = page.eval_on_selector_all(
        '.gauge[data-status="degraded"]', "els => els.map(e => e.dataset.neuron)"
    )
    assert len(degraded) == 250
    assert page.get_attribute('.gauge[data-neuron="n249"]', "aria-label") is not None
    assert console.errors == []
