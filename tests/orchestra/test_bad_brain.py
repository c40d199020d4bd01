"""A brain that answers garbage, through a real gateway and simulated neurons: every run ends
in a truthful state (answered directly with the reason recorded, or failed with a clear
reason), never stuck ``running``, and no request gets a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Proc, Spawner
from tests.orchestra.test_runs_e2e import wait_for

HUGE = json.dumps(
    {"subtasks": [{"task": f"part {n} " * 8, "expected_tokens": 10**9} for n in range(300)]}
)
INFINITE = json.dumps({"subtasks": [{"task": "a", "expected_tokens": 7}] * 2}).replace("7", "1e999")

GARBAGE = {  # the brain's model: (its scripted answer to every plan request, what is wrong)
    "prose": ("Sure! First, look at the planets. Then compare them.", "not valid JSON"),
    "shape": ('{"steps": ["look", "compare"]}', 'no "subtasks" list'),
    "list": ('[{"task": "look", "expected_tokens": 50}]', 'no "subtasks" list'),
    "empty": ('{"subtasks": []}', "0 subtask(s): a plan needs at least 2"),
    "huge": (HUGE, "300 subtasks: at most 4"),
    "infinite": (INFINITE, "subtask 1 has expected_tokens inf: give a count"),
}
#: What a streamed outline says of the same garbage; a huge plan is no garbage there: its
#: first sections run, and the rest are never read.
OUTLINE_WHY = GARBAGE | {
    "empty": (GARBAGE["empty"][0], "0 sections: an outline needs at least 1"),
    "huge": (HUGE, None),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """Workers serving llama3 (one healthy, one on a model that always fails), and one
    brain per kind of garbage, each serving its own model."""
    tmp = tmp_path_factory.mktemp("bad-brain")
    spawner = Spawner(tmp)
    try:
        proc = spawner.gateway(f"sqlite:///{tmp / 'brain.db'}", probe_interval=1)
        sims = {"worker": spawner.sim(2000, model="llama3")}
        sims["broken"] = spawner.sim(2000, model="fragile", extra=("--fail-rate", "1"))
        for kind, (answer, _) in GARBAGE.items():
            sims[kind] = spawner.sim(
                5000, model=f"brain-{kind}", extra=("--structured-reply", answer)
            )
        for name, sim in sims.items():
            body = {"url": sim.url, "name": name}
            httpx.post(f"{proc.url}/fleet/neurons", json=body).raise_for_status()
        yield proc
    finally:
        spawner.close()


def start(gateway: Proc, **fields: Any) -> dict[str, Any]:
    body = {"task": "Compare the planets", "decompose": "always", **fields}
    response = httpx.post(f"{gateway.url}/fleet/runs", json=body, timeout=60)
    assert response.status_code == 202, response.text
    view: dict[str, Any] = response.json()
    return view


def finished(gateway: Proc, run_id: str) -> dict[str, Any]:
    return wait_for(gateway, run_id, lambda v: v["status"] != "running", within=180)


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_a_garbage_plan_is_answered_directly_with_the_reason(gateway: Proc, kind: str) -> None:
    run = start(gateway, model="llama3", brain=f"brain-{kind}", synthesis="rewrite")
    view = finished(gateway, run["id"])
    assert (view["status"], view["mode"]) == ("completed", "direct"), view
    why = GARBAGE[kind][1]
    assert view["reason"].startswith("the brain's plan was unusable twice ("), view["reason"]
    assert view["reason"].count(why) == 2, view["reason"]  # the first answer and the repair
    assert view["answer"]
    assert view["delegations"] == []
    assert view["plan"] == {"subtasks": []}


@pytest.mark.parametrize("kind", list(OUTLINE_WHY))
def test_a_garbage_outline_is_answered_directly_with_the_reason(gateway: Proc, kind: str) -> None:
    run = start(gateway, model="llama3", brain=f"brain-{kind}")
    view = finished(gateway, run["id"])
    why = OUTLINE_WHY[kind][1]
    assert view["status"] == "completed", view
    assert view["answer"]
    if why is None:  # the planned sections run; the brain is let go before the rest
        assert view["mode"] == "decomposed"
        planned = view["plan"]["planned"]
        assert len(view["delegations"]) == planned
        assert "skipped" not in view["plan"]  # the entries past those planned were never read
        return
    assert view["mode"] == "direct"
    assert view["reason"].startswith("the brain's outline was unusable twice ("), view["reason"]
    assert view["reason"].count(why) == 2, view["reason"]  # the first answer and the repair
    assert view["delegations"] == []
    assert view["plan"]["subtasks"] == []


def test_garbage_and_then_no_neuron_able_to_answer_fails_with_the_reasons(gateway: Proc) -> None:
    run = start(gateway, model="fragile", brain="brain-prose")
    view = finished(gateway, run["id"])
    assert (view["status"], view["mode"]) == ("failed", "direct"), view
    assert "no neuron could serve 'fragile'" in view["reason"]
    assert "simulated failure" in view["reason"]
    assert view["finished_at"] is not None


def test_a_brain_nobody_serves_fails_the_run_with_the_reason(gateway: Proc) -> None:
    run = start(gateway, model="llama3", brain="ghost")
    view = finished(gateway, run["id"])
    assert view["status"] == "failed"
    assert view["reason"].startswith("model 'ghost' is not served by any active neuron")
    events = httpx.get(f"{gateway.url}/fleet/runs/{run['id']}/events", timeout=30)
    assert events.status_code == 200
    assert "event: done" in events.text  # a finished run's stream ends at once
