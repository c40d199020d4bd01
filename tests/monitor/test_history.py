"""The monitor's detail data and its page, served in-process."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ganglion.neurons.base import TokenStats
from tests.monitor.conftest import InProcess


async def test_history_has_speeds_errors_and_status_changes(gateway_app: InProcess) -> None:
    registry = gateway_app.gateway.registry
    gpu = await registry.add("http://gpu:11434", name="gpu")
    for tps in (80.0, 90.0, 85.0):
        await registry.record_success(gpu, "llama3", TokenStats(output_tokens=int(tps), decode_s=1))
    await registry.record_failure(gpu, "HTTP 500 from the neuron")
    await registry.suspend("gpu")

    response = await gateway_app.client.get("/fleet/neurons/gpu/history")
    assert response.status_code == 200, response.text
    history = response.json()
    assert history["name"] == "gpu"
    assert history["models"] == ["llama3"]
    assert [s["tokens_per_second"] for s in history["samples"]] == [80.0, 90.0, 85.0]
    assert {s["model"] for s in history["samples"]} == {"llama3"}
    [error] = history["errors"]
    assert error["reason"] == "HTTP 500 from the neuron"
    when = datetime.fromisoformat(error["at"])
    assert abs(datetime.now(UTC) - when) < timedelta(seconds=5)
    assert [c["status"] for c in history["changes"]][-1] == "suspended"
    for sample in history["samples"]:
        assert datetime.fromisoformat(sample["at"]).tzinfo is not None


async def test_clients_that_are_not_browsers_see_an_ollama_server(
    gateway_app: InProcess,
) -> None:
    for method in ("GET", "HEAD"):
        response = await gateway_app.client.request(method, "/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
    assert (await gateway_app.client.get("/")).text == "Ollama is running"


async def test_history_of_an_unknown_neuron_is_404(gateway_app: InProcess) -> None:
    response = await gateway_app.client.get("/fleet/neurons/nope/history")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


async def test_the_page_and_its_assets_come_from_the_package(gateway_app: InProcess) -> None:
    page = await gateway_app.client.get("/", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/monitor/app.js"' in page.text
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert links
    assert all(link.startswith(("/monitor/", "#")) for link in links), links  # no CDN
    for asset, kind in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        response = await gateway_app.client.get(f"/monitor/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(kind)
        assert "https://" not in response.text
        assert "@import" not in response.text
    assert (await gateway_app.client.get("/monitor/../config.py")).status_code == 404
    assert (await gateway_app.client.get("/monitor/secret.txt")).status_code == 404
