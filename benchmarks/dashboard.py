"""The Synapse dashboard at a thousand neurons: how long Chromium takes to paint every gauge,
and how busy live updates keep the browser.

    .venv/bin/python benchmarks/dashboard.py [--neurons 1000] [--watch 30] [--rate 10] [--json]

``ganglion sim --count N`` serves the neurons; a fresh ``ganglion serve`` registers them all
with one ``POST /fleet/neurons`` (probes every 10 s). Once every neuron is active, Debian's
Chromium (driven by Playwright, 1440 x 900) opens the page, ``--loads`` times:

- **paint**: from the start of navigation until every gauge is in the page and a frame has
  been drawn after it (two animation frames), by the page's own clock;
- **watch** (once): for ``--watch`` seconds while a client sends requests through the
  gateway, one after another, at most ``--rate`` a second (each moves one gauge's in-flight
  count and speed), the browser main thread's busy time (Chrome's ``TaskDuration``), as a
  share of one core, and the events the page received.

Target (issue 19, at 1,000 neurons): every gauge painted within 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _fleet import heading, machine_note, run_main, show
from playwright.sync_api import sync_playwright
from scale import start_gateway, start_sims, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 900}
TARGET_PAINT_S = 2.0

# Resolves, in the page, once every gauge is there and two frames have been drawn since.
PAINTED = """count => new Promise(done => {
  const check = () => {
    if (document.querySelectorAll('.gauge[data-neuron]').length >= count) {
      requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now())));
    } else {
      requestAnimationFrame(check);
    }
  };
  check();
})"""

# Counts the events the page's stream delivers, by wrapping the handlers' dispatch.
COUNT_EVENTS = """() => {
  window.__events = 0;
  for (const kind of ["neuron", "removed", "snapshot", "run"]) {
    window.synapse.on(kind, () => { window.__events += 1; });
  }
}"""


def traffic(url: str, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Short generations through the gateway, one after another, at most ``rate`` a second,
    until ``stop``; ``sent[0]`` counts them."""
    body = {"model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": 4}}
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            began = time.monotonic()
            client.post(f"{url}/api/generate", json=body)
            sent[0] += 1
            stop.wait(max(0.0, 1 / rate - (time.monotonic() - began)))


def measure(url: str, neurons: int, loads: int, watch: float, rate: float) -> dict[str, Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            paints = []
            for _ in range(loads):
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(url, wait_until="commit")
                paints.append(page.evaluate(PAINTED, neurons) / 1000)
                page.close()
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.evaluate(PAINTED, neurons)
            page.evaluate(COUNT_EVENTS)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            stop, sent = threading.Event(), [0]
            sender = threading.Thread(target=traffic, args=(url, rate, stop, sent), daemon=True)
            before = busy_s(cdp)
            sender.start()
            began = time.monotonic()
            time.sleep(watch)
            busy, wall = busy_s(cdp) - before, time.monotonic() - began
            events, requests = page.evaluate("window.__events"), sent[0]
            stop.set()
            sender.join(30)
            wide = page.evaluate(
                "Math.max(...[...document.querySelectorAll('.node')].map(n => n.offsetWidth))"
                " / window.innerWidth"
            )
            page.close()
        finally:
            browser.close()
    return {
        "paint_s": [round(p, 2) for p in paints],
        "paint_median_s": round(statistics.median(paints), 2),
        "browser_busy_share": round(busy / wall, 4),
        "events_per_s": round(events / wall, 1),
        "requests_per_s": round(requests / wall, 1),
        "widest_group_share": round(wide, 2),
    }


def busy_s(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="ganglion-dashboard-") if args.logs is None else None
    root = Path(tmp.name) if tmp else args.logs
    root.mkdir(parents=True, exist_ok=True)
    processes = []
    try:
        sims, urls = start_sims(root, "dash", args.neurons)
        processes.append(sims)
        gateway = start_gateway(root, 10.0)
        processes.append(gateway)
        body = [{"url": url, "api": "ollama"} for url in urls]
        added = httpx.post(f"{gateway.url}/fleet/neurons", json=body, timeout=600)
        if added.status_code != 201:
            raise SystemExit(f"registering: {added.status_code} {added.text[:500]}")
        wait_for(gateway.url, "active", args.neurons, 120)
        row = measure(gateway.url, args.neurons, args.loads, args.watch, args.rate)
    finally:
        for process in reversed(processes):
            process.stop()
        if tmp:
            tmp.cleanup()
    return {
        **heading("dashboard"),
        "neurons": args.neurons,
        "watch_s": args.watch,
        "rate": args.rate,
        **row,
    }


def print_table(result: dict[str, Any]) -> None:
    paints = ", ".join(f"{p:.2f}" for p in result["paint_s"])
    verdict = "met" if result["paint_median_s"] <= TARGET_PAINT_S else "MISSED"
    print(
        f"{result['neurons']} neurons: every gauge painted in {result['paint_median_s']:.2f} s "
        f"(median of {paints}; target <= {TARGET_PAINT_S:g} s) {verdict}"
    )
    print(
        f"live: {result['events_per_s']:.1f} events/s received while "
        f"{result['requests_per_s']:.1f} "
        "requests/s went through the gateway; "
        f"browser main thread busy {100 * result['browser_busy_share']:.1f}% of a core "
        f"over {result['watch_s']:g} s"
    )
    print(f"widest node group: {100 * result['widest_group_share']:.0f}% of the window's width")
    print(f"({machine_note()}; Chromium {VIEWPORT['width']}x{VIEWPORT['height']}, no GPU)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=3, help="page loads timed")
    parser.add_argument("--watch", type=float, default=30.0, help="seconds of live updates")
    parser.add_argument("--rate", type=float, default=10.0, help="requests a second meanwhile")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"needs Chromium at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    return show(run(args), args.json, print_table)


if __name__ == "__main__":
    run_main(main)
