"""A real multi-host fleet under faults: each test breaks one thing while work is under way,
through the gateway's own HTTP API, and checks what the fleet then says and does.

The truths every run must keep: it completes, every subtask is answered (each delegation
``completed``, with its whole output, none left ``active``), a neuron that cannot be
reached shows ``offline`` with a reason, and one that comes back shows ``active``. Times
to notice are printed (``pytest -rP``) for the reliability notes, never asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai

from ganglion.local.llama import LlamaServer
from tests.faults.conftest import (
    BRAIN,
    SUBTASKS,
    WORKER,
    Gateway,
    Sim,
    eventually,
    start_sims,
)
from tests.faults.netns import Network

LABEL = "[sim]"


def enlist(gateway: Gateway, sims: dict[str, Sim]) -> None:
    for sim in sims.values():
        gateway.add(sim.name, sim.url)


def decoding(sim: Sim) -> bool:
    """Whether the sim is streaming an answer right now (seen from the sim itself)."""
    return bool(sim.stats()["decoding"])


def assert_whole(view: dict[str, Any]) -> None:
    """The run completed, and every subtask has its whole answer from one neuron: one
    ``[sim]`` label and exactly the tokens asked for, nothing of a broken attempt."""
    assert (view["status"], view["mode"], view["reason"]) == ("completed", "decomposed", None)
    assert view["answer"]
    assert len(view["delegations"]) == SUBTASKS
    for d in view["delegations"]:
        assert d["status"] == "completed", d
        assert d["output"].count(LABEL) == 1, d
        assert len(d["output"].split()) == d["tokens"] == d["expected_tokens"], d


def report(fault: str, **seen: Any) -> None:
    print(f"fault: {fault}: " + "; ".join(f"{k}={v}" for k, v in seen.items()))


def break_and_heal(
    gateway: Gateway,
    sims: dict[str, Sim],
    fault: str,
    break_it: Callable[[], None],
    heal: Callable[[], None],
) -> None:
    """Break n3 (5.8 tok/s) while it streams a subtask of a run over n1, n2 and n3; check
    that the run completes whole, n3 goes offline with a reason naming it, the others stay
    active, and n3 is active again once healed. Reports what the gateway saw, and when."""
    enlist(gateway, sims)
    victim = sims["n3"]
    run_id = gateway.start_run()
    eventually(lambda: decoding(victim), 60, "n3 answering a subtask")
    broken_at = datetime.now(UTC)
    break_it()
    view = gateway.finished(run_id)
    assert_whole(view)
    moved = [d for d in view["delegations"] if d["attempts"] > 1]
    assert moved, "the subtask n3 was answering must have moved"
    assert all(d["neuron"] != "n3" for d in moved)
    offline = gateway.wait_status("n3", "offline")
    assert victim.host.address in offline["reason"], offline
    assert [gateway.neuron(other)["status"] for other in ("n1", "n2")] == ["active"] * 2
    healed_at = datetime.now(UTC)
    heal()
    assert gateway.wait_status("n3", "active")["reason"] is None
    report(
        fault,
        run=view["status"],
        moved=[(d["index"], d["attempts"], d["neuron"]) for d in moved],
        offline_after_s=gateway.seconds_to("n3", "offline", broken_at),
        reason=offline["reason"],
        active_after_healing_s=gateway.seconds_to("n3", "active", healed_at),
        run_total_s=view["timings"]["total_s"],
    )


def test_a_neuron_hosts_link_cut_mid_run(
    net: Network, sims: dict[str, Sim], gateway: Gateway
) -> None:
    host = sims["n3"].host
    break_and_heal(
        gateway,
        sims,
        "n3's link cut at the switch (ip link set PORT down), healed by setting it up",
        lambda: net.cut(host),
        lambda: net.mend(host),
    )


def test_a_neuron_killed_mid_run(sims: dict[str, Sim], gateway: Gateway) -> None:
    proc = sims["n3"].proc
    break_and_heal(
        gateway,
        sims,
        "SIGKILL of n3's sim process, healed by starting it again",
        proc.kill,
        lambda: proc.start(60),
    )


def test_a_neuron_that_stalls_after_its_first_tokens(
    net: Network, sims: dict[str, Sim], gateway: Gateway, tmp_path: Path
) -> None:
    """n0 streams two tokens of every answer, then nothing. It ranks first while speeds
    are unknown (ties go by name), so the brain's plan starts there too."""
    stalls = ("--stall-rate", "1", "--stall-after-tokens", "2")
    staller = start_sims(net, tmp_path, {"n0": (90.0, stalls)})["n0"]
    body = {"model": BRAIN, "prompt": "load the brain, as n1 has it loaded"}
    with httpx.stream("POST", f"{staller.url}/api/generate", json=body, timeout=30) as warm:
        next(warm.iter_lines())  # loaded; the rest stalls, and this hangs up
    gateway.add("n0", staller.url)
    gateway.add("n1", sims["n1"].url)
    run_id = gateway.start_run()
    view = gateway.finished(run_id)
    assert_whole(view)
    assert all(d["neuron"] == "n1" for d in view["delegations"])
    moved = [d for d in view["delegations"] if d["attempts"] > 1]
    assert moved, "round-robin gave n0 subtasks; each must have moved to n1"
    stats = staller.stats()
    assert stats["totals"]["stalled"] - 1 > len(moved)  # the plan stalled there too
    assert stats["totals"]["completed"] == 0
    n0 = eventually(lambda: (v := gateway.neuron("n0"))["status"] != "active" and v, 30, "n0")
    assert (n0["status"], n0["is_active"]) == ("degraded", True)
    assert "no token for 2 s" in n0["reason"]
    report(
        "n0 streams 2 tokens of every answer, then stalls (sim --stall-rate 1)",
        run=view["status"],
        stalls=stats["totals"]["stalled"],
        moved=[(d["index"], d["attempts"], d["neuron"]) for d in moved],
        n0_status=n0["status"],
        reason=n0["reason"],
        run_total_s=view["timings"]["total_s"],
    )
    staller.proc.stop()


def test_plain_requests_are_answered_while_a_host_is_cut(
    net: Network, sims: dict[str, Sim], gateway: Gateway
) -> None:
    enlist(gateway, sims)
    fastest = sims["n1"]
    cut_at = datetime.now(UTC)
    net.cut(fastest.host)
    messages = [{"role": "user", "content": "Name a planet."}]
    auth = {"Authorization": f"Bearer {gateway.user_key}"}
    answers = []
    with ollama.Client(host=gateway.url, headers=auth, timeout=60) as client:
        for _ in range(2):
            reply = client.chat(model=WORKER, messages=messages, options={"num_predict": 6})
            answers.append(reply.message.content)
        streamed = client.chat(
            model=WORKER, messages=messages, options={"num_predict": 6}, stream=True
        )
        answers.append("".join(part.message.content or "" for part in streamed))
    served_by = []
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.user_key) as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model=WORKER, messages=messages, max_tokens=6
            )
            served_by.append(raw.headers["x-ganglion-neuron"])
            answers.append(raw.parse().choices[0].message.content or "")
        stream = client.chat.completions.create(
            model=WORKER, messages=messages, max_tokens=6, stream=True
        )
        answers.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    answered_s = (datetime.now(UTC) - cut_at).total_seconds()
    assert all(answer.startswith(LABEL) and len(answer.split()) == 6 for answer in answers)
    assert "n1" not in served_by
    offline = gateway.wait_status("n1", "offline")
    assert fastest.host.address in offline["reason"]
    net.mend(fastest.host)
    gateway.wait_status("n1", "active")
    report(
        "n1 (the fastest) cut before 6 client requests (ollama, openai; streamed and not)",
        answered=f"{len(answers)}/6",
        all_answered_within_s=round(answered_s, 1),
        served_by=served_by,
        offline_after_s=gateway.seconds_to("n1", "offline", cut_at),
        reason=offline["reason"],
    )


def test_the_real_llama_neuron_serves_across_hosts_and_takes_part_in_a_run(
    sims: dict[str, Sim], llama: LlamaServer, gateway: Gateway
) -> None:
    gateway.add("llm", llama.url)
    gateway.add("n2", sims["n2"].url)
    assert gateway.neuron("llm")["api"] == "openai"
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.user_key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=WORKER,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=12,
            extra_headers={"X-Ganglion-Neuron": "llm"},
        )
    answer = raw.parse().choices[0].message.content
    assert raw.headers["x-ganglion-neuron"] == "llm"
    assert answer
    assert LABEL not in answer
    view = gateway.finished(gateway.start_run(max_subtasks=SUBTASKS), within=240)
    assert (view["status"], view["mode"]) == ("completed", "decomposed"), view
    by_llama = [d for d in view["delegations"] if d["neuron"] == "llm"]
    assert by_llama
    for d in view["delegations"]:
        assert d["status"] == "completed"
        assert d["output"].strip()
    assert all(LABEL not in d["output"] for d in by_llama)
    report(
        "no fault: the real llama.cpp neuron (SmolLM2-135M) on its own host",
        answer=repr(answer[:40]),
        subtasks_by_llama=len(by_llama),
        run_total_s=view["timings"]["total_s"],
    )
