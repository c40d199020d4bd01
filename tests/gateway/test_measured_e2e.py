"""Measured prefill speed and load time, through a real gateway and simulated neurons: the
gateway learns them from the neurons' own timings, routes a long prompt by them, shows them in
``GET /fleet/neurons``, and keeps them across a restart (from the store's samples)."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import Spawner

PIN = "X-Ganglion-Neuron"
PROMPTS = itertools.count()


def generate(url: str, words: int, *, pin: str | None = None, out: int = 8) -> httpx.Response:
    """A prompt of its own each time (its first word), so that no neuron is predicted to hold
    it in its cache: these tests are about measured speeds."""
    body = {
        "model": "llama3",
        "prompt": " ".join([f"prompt{next(PROMPTS)}"] + ["word"] * (words - 1)),  # a word: a token
        "stream": False,
        "options": {"num_predict": out},
    }
    answer = httpx.post(
        f"{url}/api/generate", json=body, headers={PIN: pin} if pin else {}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return answer


def views(url: str) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in httpx.get(f"{url}/fleet/neurons").json()}


def test_a_long_prompt_goes_to_the_neuron_measured_to_read_it_fastest(
    spawn: Spawner, db_url: str
) -> None:
    decoder = spawn.sim(100, model="llama3", extra=("--prefill-tps", "50"))
    reader = spawn.sim(60, model="llama3", extra=("--prefill-tps", "5000", "--load-s", "1"))
    gateway = spawn.gateway(db_url)
    for name, sim in (("decoder", decoder), ("reader", reader)):
        added = httpx.post(f"{gateway.url}/fleet/neurons", json={"url": sim.url, "name": name})
        assert added.status_code == 201, added.text

    long_prompt = 1000
    # before any measurement, prefill is taken as 10x decode: the faster decoder looks best
    first = generate(gateway.url, long_prompt)
    assert first.headers[PIN] == "decoder"
    generate(gateway.url, 100, pin="reader")

    seen = views(gateway.url)
    assert seen["decoder"]["prefill_speeds"]["llama3"] == pytest.approx(50, rel=0.3)
    assert seen["reader"]["prefill_speeds"]["llama3"] > 1000
    assert seen["reader"]["load_seconds"]["llama3"] == pytest.approx(1.0, rel=0.3)
    assert seen["decoder"]["load_seconds"] == {}  # loaded at once: nothing to measure

    assert generate(gateway.url, long_prompt).headers[PIN] == "reader"
    short = generate(gateway.url, 5, out=150)  # a short prompt, a long answer: decode decides
    assert short.headers[PIN] == "decoder"

    gateway.stop()
    again = spawn.gateway(db_url)
    restored = views(again.url)
    assert restored["decoder"]["prefill_speeds"] == seen["decoder"]["prefill_speeds"]
    assert restored["reader"]["load_seconds"] == seen["reader"]["load_seconds"]
    assert generate(again.url, long_prompt).headers[PIN] == "reader"


@pytest.mark.parametrize("load_s", ["0", "2"], ids=["loaded at once", "a 2 s load"])
def test_concurrent_requests_spread_over_neurons_never_measured(
    spawn: Spawner, db_url: str, load_s: str
) -> None:
    """Issue 16's defect: two equal sims, one slot each, added without ``ganglion bench``;
    six requests at once must not all queue on the first while the second idles."""
    extra = ("--prefill-tps", "200", "--load-s", load_s)
    sims = [spawn.sim(40, model="llama3", extra=extra) for _ in range(2)]
    gateway = spawn.gateway(db_url)
    for name, sim in zip(("first", "second"), sims, strict=True):
        added = httpx.post(f"{gateway.url}/fleet/neurons", json={"url": sim.url, "name": name})
        assert added.status_code == 201, added.text
    with ThreadPoolExecutor(6) as pool:
        # Answers of 1.6 s each: the six overlap even when a busy machine starts them slowly.
        answers = list(pool.map(lambda _: generate(gateway.url, 20, out=64), range(6)))
    served = sorted(answer.headers[PIN] for answer in answers)
    assert served.count("first") >= 2, served
    assert served.count("second") >= 2, served
