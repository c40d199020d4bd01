"""The dashboard's marker for a GPU that contributes nothing: a gauge whose neuron's model
runs on the CPU shows it, says why in its tooltip and its label, and drops it once fixed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.fakes import FakeFleet
from tests.monitor.conftest import ARTIFACTS, Console
from tests.monitor.test_dashboard_browser import serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

NOUVEAU = {
    "gpus": [
        {
            "name": "Quadro M4000",
            "driver_in_use": "nouveau",
            "live": {"state": "wrong", "why": "nouveau drives it: display only, never CUDA"},
        }
    ],
    "live": {"cuda_ok": False, "why": "nouveau drives the GPU: display only, never CUDA"},
}


def test_a_gauge_marks_a_model_on_the_cpu(
    tmp_path: Path, browser_page: tuple[Page, Console]
) -> None:
    fleet = FakeFleet()
    box = fleet.add("gpu-box:11434", models=["llama3.2:3b"])
    box.in_memory = {"llama3.2:3b": (4_700_000_000, 0)}
    fleet.add("cpu-box:11434", models=["llama3.2:3b"]).in_memory = {
        "llama3.2:3b": (4_700_000_000, 0)
    }
    gateway = serve_in_thread(tmp_path / "fleet.db", fleet)
    try:
        for host in ("gpu-box", "cpu-box"):
            body = {"url": f"http://{host}:11434", "name": host, "node": host}
            assert httpx.post(f"{gateway.url}/fleet/neurons", json=body).status_code == 201
        page, console = browser_page
        page.goto(gateway.url)
        page.wait_for_selector('.gauge[data-neuron="gpu-box"][data-idle-gpu="false"]')

        sent = httpx.put(f"{gateway.url}/fleet/nodes/gpu-box/doctor", json=NOUVEAU)
        assert sent.status_code == 200, sent.text
        marked = '.gauge[data-neuron="gpu-box"][data-idle-gpu="true"]'
        page.wait_for_selector(marked, timeout=5000)
        assert page.get_attribute(f"{marked} .idle-gpu", "visibility") == "visible"
        title = page.get_attribute(marked, "title") or ""
        assert "model on CPU: 0 of 4.7 GB in VRAM (llama3.2:3b)" in title
        assert "run `ganglion doctor` on gpu-box" in title
        assert "GPU idle" not in (page.get_attribute(marked, "aria-label") or "")  # = reason
        assert "model on CPU" in (page.get_attribute(marked, "aria-label") or "")
        cpu_box = '.gauge[data-neuron="cpu-box"]'
        assert page.get_attribute(cpu_box, "data-idle-gpu") == "false"  # no GPU known there
        assert page.get_attribute(f"{cpu_box} .idle-gpu", "visibility") == "hidden"
        page.screenshot(path=ARTIFACTS / "idle-gpu.png")

        box.in_memory = {"llama3.2:3b": (4_700_000_000, 4_700_000_000)}
        page.wait_for_selector('.gauge[data-neuron="gpu-box"][data-idle-gpu="false"]', timeout=5000)
        assert console.errors == []
    finally:
        gateway.stop()
