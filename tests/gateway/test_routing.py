"""The router's choices, from measured speeds and what is in flight (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganglion.errors import UnknownNeuron
from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry
from ganglion.fleet.speed import SpeedBook
from ganglion.fleet.status import NeuronStatus
from ganglion.neurons.base import Dialect, TokenStats
from ganglion.prefixes import RETURN_PERIODS, of_messages, of_text
from ganglion.routing import DEFAULT_LOAD_S, ROUTING_POLICIES, Job, Router, serves
from ganglion.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def neuron(
    name: str, tps: float | None, *, slots: int = 1, models: list[str] | None = None
) -> Neuron:
    made = Neuron(
        id=0,
        name=name,
        url=f"http://{name}:1",
        api=Dialect.OLLAMA,
        node=name,
        models=models or ["llama3:latest"],
        adapter=None,  # type: ignore[arg-type]  # routing never talks to neurons
        slots=slots,
    )
    if tps is not None:
        made.speeds.add("llama3:latest", tps)
    return made


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Store.open(f"sqlite:///{tmp_path / 'r.db'}"))


HELD: list[object] = []


def hold(router: Router, job: Job) -> str:
    """Admit ``job`` on the router's first choice and keep it in flight; the neuron's name."""
    best = router.rank(job)[0]
    admitted = router.admit(best, job)
    admitted.__enter__()
    HELD.append(admitted)
    return best.neuron.name


def router_with(
    registry: Registry, *neurons: Neuron, policy: str = "cache-aware", **kw: object
) -> tuple[Router, Clock]:
    for n in neurons:
        registry._neurons[n.name] = n
    clock = Clock()
    return Router(registry, ROUTING_POLICIES[policy](), clock=clock, **kw), clock  # type: ignore[arg-type]


def test_sequential_requests_all_go_to_the_fast_neuron(registry: Registry) -> None:
    router, _ = router_with(registry, neuron("fast", 90), neuron("slow", 5.5))
    job = Job("llama3", prompt_tokens=50, output_tokens=100)
    for _ in range(10):
        best = router.rank(job)[0]
        with router.admit(best, job):
            assert best.neuron.name == "fast"


def test_overflow_goes_to_the_slow_neuron_only_when_it_finishes_sooner(registry: Registry) -> None:
    router, _ = router_with(registry, neuron("fast", 90), neuron("slow", 5.5))
    job = Job("llama3", output_tokens=100)
    placed: list[str] = []
    held = []
    for _ in range(20):
        best = router.rank(job)[0]
        placed.append(best.neuron.name)
        ticket = router.admit(best, job)
        ticket.__enter__()
        held.append(ticket)
        if best.neuron.name == "slow":
            slow_finish = best.finish_s
            fast_finish = router.estimate(registry.get("fast"), job).finish_s
            assert slow_finish <= fast_finish
    # 100 tokens: 1.1 s on fast, 18.2 s on slow: slow pays only behind ~16 queued jobs
    assert placed[:16] == ["fast"] * 16
    assert "slow" in placed
    assert placed.count("slow") < placed.count("fast")


def test_more_slots_means_less_waiting(registry: Registry) -> None:
    router, _ = router_with(registry, neuron("wide", 20, slots=4), neuron("narrow", 25))
    job = Job("llama3", output_tokens=100)
    names = [hold(router, job) for _ in range(4)]
    assert names == ["narrow", "wide", "wide", "wide"]


def test_backlog_drains_with_time(registry: Registry) -> None:
    router, clock = router_with(registry, neuron("fast", 100), neuron("slow", 10))
    job = Job("llama3", output_tokens=1000)
    for _ in range(3):
        hold(router, job)
    before = router.estimate(registry.get("fast"), job).wait_s
    clock.now += 5
    assert router.estimate(registry.get("fast"), job).wait_s < before


def test_unmeasured_neurons_borrow_the_fleet_median(registry: Registry) -> None:
    router, _ = router_with(registry, neuron("known", 40), neuron("new", None))
    assert router.decode_tps(registry.get("new"), "llama3") == 40


def test_only_active_neurons_serving_the_model(registry: Registry) -> None:
    other = neuron("other", 500, models=["qwen"])
    down = neuron("down", 500)
    down.status = NeuronStatus.OFFLINE
    paused = neuron("paused", 500)
    paused.status = NeuronStatus.SUSPENDED
    router, _ = router_with(registry, neuron("ok", 5), other, down, paused)
    assert [e.neuron.name for e in router.rank(Job("llama3"))] == ["ok"]


def test_cooling_neurons_go_last_and_full_ones_not_at_all(registry: Registry) -> None:
    router, _ = router_with(registry, neuron("fast", 90), neuron("slow", 5), max_queue=0)
    fast = registry.get("fast")
    router.cool_down(fast)
    assert [e.neuron.name for e in router.rank(Job("llama3"))] == ["slow", "fast"]
    router.warm_up(fast)
    job = Job("llama3")
    hold(router, job)
    assert [e.neuron.name for e in router.rank(job)] == ["slow"]
    hold(router, job)
    assert router.rank(job) == []
    assert router.retry_after_s("llama3") >= 1.0


def test_pinning_names_the_neuron(registry: Registry) -> None:
    router, _ = router_with(registry, neuron("fast", 90), neuron("slow", 5))
    assert [e.neuron.name for e in router.rank(Job("llama3"), pinned="slow")] == ["slow"]
    with pytest.raises(UnknownNeuron):
        router.rank(Job("llama3"), pinned="ghost")


def test_round_robin_and_least_busy_are_strategies(registry: Registry) -> None:
    router, _ = router_with(registry, neuron("a", 90), neuron("b", 5), policy="round-robin")
    firsts = [router.rank(Job("llama3"))[0].neuron.name for _ in range(4)]
    assert firsts == ["a", "b", "a", "b"]
    router.policy = ROUTING_POLICIES["least-busy"]()
    job = Job("llama3")
    assert hold(router, job) == "a"
    assert router.rank(job)[0].neuron.name == "b"


def test_cold_model_costs_a_load(registry: Registry) -> None:
    warm, cold = neuron("warm", 50), neuron("cold", 50)
    warm.loaded, cold.loaded = ["llama3:latest"], []
    router, _ = router_with(registry, cold, warm)
    assert router.rank(Job("llama3", output_tokens=10))[0].neuron.name == "warm"


def test_a_measured_load_time_replaces_the_default(registry: Registry) -> None:
    """Cold but much faster wins while a load is assumed 5 s; not once its load is known
    to take a minute."""
    warm, cold = neuron("warm", 20), neuron("cold", 200)
    warm.loaded, cold.loaded = ["llama3:latest"], []
    router, _ = router_with(registry, warm, cold)
    job = Job("llama3", output_tokens=200)  # warm: 10 s; cold: 1 s + the load
    assert router.rank(job)[0].neuron.name == "cold"
    cold.speeds.observe("llama3", TokenStats(load_s=60.0))
    assert router.rank(job)[0].neuron.name == "warm"


def test_a_measured_prefill_speed_replaces_the_estimate(registry: Registry) -> None:
    """A long prompt goes to the neuron that reads it fastest once prefill is measured; before,
    prefill is taken as ten times decode, so the faster decoder looked faster at both."""
    decoder, reader = neuron("decoder", 100), neuron("reader", 60)
    router, _ = router_with(registry, decoder, reader)
    long_prompt = Job("llama3", prompt_tokens=4000, output_tokens=50)
    assert router.rank(long_prompt)[0].neuron.name == "decoder"
    decoder.speeds.observe("llama3:latest", TokenStats(prompt_tokens=500, prefill_s=10.0))
    reader.speeds.observe("llama3:latest", TokenStats(prompt_tokens=500, prefill_s=0.25))
    assert router.rank(long_prompt)[0].neuron.name == "reader"
    short_prompt = Job("llama3", prompt_tokens=10, output_tokens=500)
    assert router.rank(short_prompt)[0].neuron.name == "decoder"


def test_concurrent_requests_spread_over_unmeasured_cold_neurons(registry: Registry) -> None:
    """Two equal neurons, neither measured nor with the model loaded: a load under way on
    one holds up every job queued behind it, so concurrent short jobs split between them
    instead of piling onto the first (issue 16)."""
    first, second = neuron("first", None), neuron("second", None)
    first.loaded, second.loaded = [], []
    router, clock = router_with(registry, first, second)
    placed = [hold(router, Job("llama3", output_tokens=16)) for _ in range(6)]
    assert sorted(placed) == ["first"] * 3 + ["second"] * 3
    clock.now += DEFAULT_LOAD_S  # both loads done: the queues alone decide
    assert hold(router, Job("llama3", output_tokens=16)) in ("first", "second")


def test_concurrent_requests_spread_over_unmeasured_neurons(registry: Registry) -> None:
    first, second = neuron("first", None), neuron("second", None)
    router, _ = router_with(registry, first, second)
    placed = [hold(router, Job("llama3", output_tokens=16)) for _ in range(6)]
    assert sorted(placed) == ["first"] * 3 + ["second"] * 3


def chat(turns: int, name: str = "a") -> Job:
    """A conversation's request after ``turns`` turns: a document of ~4,000 tokens, then
    short questions and answers."""
    messages = [{"role": "user", "content": f"{name}: " + "x" * 16_000}]
    for turn in range(turns):
        messages.append({"role": "assistant", "content": f"answer {turn}"})
        messages.append({"role": "user", "content": f"and then {turn}?"})
    prompt = of_messages(messages)
    return Job("llama3", prompt.total_tokens, 50, prompt)


def test_a_warm_slower_neuron_beats_a_cold_faster_one(registry: Registry) -> None:
    """The neuron that served a conversation's first turns holds their 4,000 tokens: its
    next turn reads a few tokens there, and all 4,000 on the faster neuron."""
    warm, cold = neuron("warm", 30), neuron("cold", 60)
    router, _ = router_with(registry, warm, cold)
    router.remember(warm, chat(0))
    router.remember(warm, chat(1))
    follow_up = chat(2)
    assert router.cached_tokens(warm, follow_up) == chat(1).prompt_tokens
    ranked = router.rank(follow_up)
    assert ranked[0].neuron.name == "warm"
    assert ranked[0].cached_tokens == chat(1).prompt_tokens
    assert ranked[1].cached_tokens == 0
    # warm: 50 / 30 + a few new tokens / 300; cold: 50 / 60 + 4,000 / 600
    assert ranked[0].finish_s < 2.0 < ranked[1].finish_s
    # the same request from another conversation finds nothing held: faster wins
    assert router.rank(chat(2, name="b"))[0].neuron.name == "cold"
    # and the cache-blind policy charges every token everywhere: the faster one, again
    router.policy = ROUTING_POLICIES["finish-time"]()
    assert router.rank(follow_up)[0].neuron.name == "cold"


def test_the_answer_a_neuron_wrote_counts_as_held_for_the_next_turn(registry: Registry) -> None:
    """The neuron's cache holds its answer after the prompt; the next turn repeats it."""
    warm = neuron("warm", 30)
    router, _ = router_with(registry, warm)
    asked = [{"role": "user", "content": "x" * 16_000}]
    answer = "y" * 4_000
    first = Job("llama3", 4000, 50, of_messages(asked))
    with router.admit(router.rank(first)[0], first) as ticket:
        assert ticket.wants_answer
        ticket.answer = answer
    said = [*asked, {"role": "assistant", "content": answer}]
    follow_up = of_messages([*said, {"role": "user", "content": "and?"}])
    job = Job("llama3", follow_up.total_tokens, 50, follow_up)
    assert router.cached_tokens(warm, job) == (16_000 + 4_000) // 4
    unread = of_messages([*asked, {"role": "user", "content": "and?"}])  # answer left out
    assert router.cached_tokens(warm, Job("llama3", 1, 50, unread)) == 16_000 // 4


def test_a_warm_neuron_loses_once_its_queue_makes_it_slower(registry: Registry) -> None:
    warm, cold = neuron("warm", 30), neuron("cold", 60)
    router, _ = router_with(registry, warm, cold)
    router.remember(warm, chat(1))
    follow_up = chat(2)
    assert router.rank(follow_up)[0].neuron.name == "warm"
    hold(router, Job("llama3", output_tokens=300))  # lands on cold (idle): 5 s of decode
    assert router.rank(follow_up)[0].neuron.name == "warm"  # cold is busy now: warm wins
    for _ in range(2):  # 300 tokens at 30 tok/s: 10 s each, queued on warm
        long_answer = Job("llama3", output_tokens=300)
        admitted = router.admit(router.rank(long_answer, pinned="warm")[0], long_answer)
        admitted.__enter__()
        HELD.append(admitted)
    ranked = router.rank(follow_up)
    assert ranked[0].neuron.name == "cold"
    assert ranked[1].neuron.name == "warm"
    assert ranked[1].cached_tokens > 0


def test_the_backlog_counts_the_prefill_still_to_read(registry: Registry) -> None:
    """A queued 4,000-token prompt holds up what comes after it, not only its output."""
    router, _ = router_with(registry, neuron("only", 50))
    hold(router, chat(2))
    blank = router.estimate(registry.get("only"), Job("llama3", output_tokens=10))
    assert blank.wait_s > chat(2).prompt_tokens / (50 * 10)


def test_a_failing_neuron_forgets_what_it_held(registry: Registry) -> None:
    warm = neuron("warm", 30)
    router, _ = router_with(registry, warm, neuron("cold", 60))
    router.remember(warm, chat(1))
    assert router.cached_tokens(warm, chat(2)) > 0
    router.cool_down(warm)
    assert router.cached_tokens(warm, chat(2)) == 0


def test_a_model_not_loaded_holds_nothing(registry: Registry) -> None:
    warm = neuron("warm", 30)
    router, _ = router_with(registry, warm)
    router.remember(warm, chat(1))
    warm.loaded = []  # Ollama unloaded the model: its cache went with it
    assert router.rank(chat(2))[0].cached_tokens == 0


def test_a_new_conversation_goes_where_it_pushes_no_conversation_out(registry: Registry) -> None:
    """``fast`` holds one prompt (cache slots 1). Pushing out a raw prompt costs nothing;
    pushing out a conversation costs the prefill it will redo."""
    fast, other = neuron("fast", 60), neuron("other", 50)
    router, _ = router_with(registry, fast, other, cache_slots=1)
    router.remember(fast, Job("llama3", 4000, prompt=of_text("x" * 16_000)))
    new = chat(0, name="new")
    assert router.rank(new)[0].neuron.name == "fast"
    assert router.rank(new)[0].displacing_s == 0
    router.remember(fast, chat(1))  # a conversation, in fast's only slot
    ranked = router.rank(new)
    assert ranked[0].neuron.name == "other"
    assert ranked[1].displacing_s > 0
    assert router.rank(chat(2))[0].neuron.name == "fast"  # its own next turn: no eviction


def test_a_cache_full_of_ended_conversations_keeps_no_one_away(registry: Registry) -> None:
    """``fast`` holds one prompt (cache slots 1): conversation ``a``, which came back every
    10 s. While it may come back, a new conversation goes to ``other`` rather than push it
    out; once it is RETURN_PERIODS intervals late after its answer, ``fast`` takes the new one."""
    fast, other = neuron("fast", 60), neuron("other", 50)
    router, clock = router_with(registry, fast, other, cache_slots=1)
    for turn in (0, 1):
        job = chat(turn, name="a")
        with router.admit(router.rank(job, pinned="fast")[0], job):
            clock.now += 2.0  # the answer takes 2 s
        clock.now += 8.0  # the next turn 10 s after the last
    new = chat(0, name="new")
    assert router.rank(new)[0].neuron.name == "other"
    assert router.rank(new)[1].displacing_s > 0
    clock.now += RETURN_PERIODS * 10.0
    ranked = router.rank(new)
    assert ranked[0].neuron.name == "fast"
    assert ranked[0].displacing_s == 0


def test_ranking_a_large_fleet_reads_each_neurons_speeds_a_bounded_number_of_times(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unmeasured neurons take the fleet's typical speed, worked out once per ranking: a
    thousand neurons cost a thousand looks, not a million (it took 2 s a request)."""
    fleet = [neuron(f"n{i}", 40.0 if i % 10 == 0 else None) for i in range(300)]
    router, _ = router_with(registry, *fleet)
    looks = {"n": 0}
    by_model = SpeedBook.by_model

    def counted(book: SpeedBook) -> dict[str, float]:
        looks["n"] += 1
        return by_model(book)

    monkeypatch.setattr(SpeedBook, "by_model", counted)
    ranked = router.rank(Job("llama3", prompt_tokens=10, output_tokens=10))
    assert len(ranked) == 300
    assert {e.decode_tps for e in ranked} == {40.0}  # measured, or the fleet's median
    assert looks["n"] <= 3 * len(fleet)
    looks["n"] = 0
    router.retry_after_s("llama3")
    assert looks["n"] <= 3 * len(fleet)


def test_a_model_is_served_under_either_spelling_of_its_tag() -> None:
    assert serves(["llama3:latest"], "llama3")
    assert serves(["mistral", "llama3"], "llama3:latest")
    assert not serves(["llama3:8b"], "llama3")
    assert not serves([], "llama3")
