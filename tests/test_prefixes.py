"""The prompt prefixes a neuron is predicted to hold: hash chains, and slots evicted LRU."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from ganglion import prefixes
from ganglion.prefixes import (
    BLOCK_CHARS,
    RETURN_PERIODS,
    CacheSlots,
    PrefixIndex,
    Prompt,
    Visit,
    of_messages,
    of_text,
)


def conversation(turns: int, name: str = "a") -> list[dict[str, str]]:
    said = [{"role": "system", "content": "You are terse."}]
    for turn in range(turns):
        said.append({"role": "user", "content": f"{name} question {turn} " + "x" * 400})
        said.append({"role": "assistant", "content": f"{name} answer {turn}"})
    return said


def test_a_chain_has_one_digest_per_message_each_covering_all_before() -> None:
    said = conversation(1)
    three = of_messages(said)
    assert len(three.digests) == 3
    lengths = [len(m["content"]) for m in said]
    assert three.tokens == tuple(sum(lengths[: i + 1]) // 4 for i in range(3))
    longer = of_messages(conversation(2))
    assert longer.digests[:3] == three.digests  # a conversation grown keeps its chain
    edited = conversation(2)
    edited[1] = {"role": "user", "content": "something else"}
    assert of_messages(edited).digests[0] == three.digests[0]
    changed = of_messages(edited).digests[1:]
    assert all(a != b for a, b in zip(changed, longer.digests[1:], strict=True))


def test_role_and_other_fields_are_part_of_a_message() -> None:
    said = of_messages([{"role": "user", "content": "hi"}])
    assert said != of_messages([{"role": "system", "content": "hi"}])
    assert said != of_messages([{"role": "user", "content": "hi", "images": ["AAAA"]}])
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert of_messages(parts).digests[0] != said.digests[0]
    assert of_messages([{"role": "user", "content": "\ud800 lone"}]).digests  # no UnicodeError
    assert of_messages([{"role": "\ud800", "content": "lone"}]).digests


def test_a_raw_prompt_is_chained_in_blocks() -> None:
    prompt = "y" * (BLOCK_CHARS * 2 + 10)
    chain = of_text(prompt)
    assert len(chain.digests) == 3
    assert chain.total_tokens == len(prompt) // 4
    assert of_text(prompt + "more").digests[:2] == chain.digests[:2]
    assert of_text("").digests == ()
    assert not chain.conversation  # a raw prompt is not taken to come back
    assert of_messages(conversation(1)).conversation


def test_a_held_prompt_matches_the_longest_shared_prefix() -> None:
    index = PrefixIndex(slots=2)
    first = of_messages(conversation(1))
    index.remember(first)
    second_turn = of_messages(conversation(2))
    assert index.match(second_turn) == first.total_tokens
    assert index.match(first) == first.total_tokens
    # a different conversation shares only the system prompt
    other = of_messages(conversation(1, name="b"))
    assert index.match(other) == other.tokens[0]
    assert index.match(of_messages([{"role": "user", "content": "new"}])) == 0


def test_the_next_turn_takes_its_earlier_turns_slot() -> None:
    index = PrefixIndex(slots=2)
    index.remember(of_messages(conversation(1, "a")))
    index.remember(of_messages(conversation(1, "b")))
    index.remember(of_messages(conversation(2, "a")))  # extends a's first turn: same slot
    assert len(index) == 2
    assert index.match(of_messages(conversation(3, "b"))) > 100  # b was not evicted


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_the_least_recently_served_prompt_is_evicted_at_the_slot_count(slots: int) -> None:
    index = PrefixIndex(slots)
    names = [f"c{i}" for i in range(slots + 1)]
    for name in names:
        index.remember(of_messages(conversation(1, name)))
    assert len(index) == slots
    held = [index.match(of_messages(conversation(2, name))) > 100 for name in names]
    assert held == [False] + [True] * slots
    index.clear()
    assert index.match(of_messages(conversation(2, names[-1]))) == 0


def test_pushing_out_a_conversation_that_ended_costs_nothing() -> None:
    """``a`` came every 10 s. Once answered, it is taken to come back until it is
    RETURN_PERIODS of those intervals late; from then on, pushing it out costs nothing."""
    index = PrefixIndex(slots=1)
    index.remember(of_messages(conversation(1, "a")), now=0.0)
    second = of_messages(conversation(2, "a"))
    index.remember(second, now=10.0)  # the next turn: 10 s after the first
    new = of_messages(conversation(1, "b"))
    late = 12.0 + RETURN_PERIODS * 10.0
    assert index.displaced(new, now=late + 1) == second.total_tokens  # still being answered
    index.answered(second, now=12.0)
    assert index.displaced(new, now=late - 1) == second.total_tokens  # may still come back
    assert index.displaced(new, now=late + 1) == 0  # ended
    assert index.match(of_messages(conversation(3, "a"))) == second.total_tokens  # still held


def test_a_conversation_seen_once_is_taken_to_come_back() -> None:
    index = PrefixIndex(slots=1)
    first = of_messages(conversation(1, "a"))
    index.remember(first, now=0.0)
    index.answered(first, now=1.0)
    assert index.displaced(of_messages(conversation(1, "b")), now=1e6) == first.total_tokens


def test_an_index_keeps_visits_only_for_the_prompts_it_holds() -> None:
    index = PrefixIndex(slots=2)
    for turn in range(1, 6):
        for name in ("a", "b", "c"):
            index.remember(of_messages(conversation(turn, name)), now=float(turn))
    assert len(index) == 2
    assert len(index._visits) == 2


def test_a_chat_followed_by_a_message_chains_as_if_sent_with_it() -> None:
    said = conversation(2)
    asked, answer = said[:-1], said[-1]
    grown = of_messages(asked).followed_by(answer)
    assert grown == of_messages(said)
    assert grown is not None
    more = {"role": "user", "content": "more"}
    assert grown.followed_by(more) == of_messages([*said, more])
    assert of_text("raw").followed_by(answer) is None


def test_the_answer_a_neuron_wrote_is_held_after_its_prompt() -> None:
    """The next turn repeats the answer: it matches through it. A next turn that repeats it
    otherwise (a client trimmed it) matches the prompt, and still takes the same slot."""
    index = PrefixIndex(slots=2)
    asked = of_messages(conversation(2, "a")[:-1])
    index.remember(asked, now=0.0)
    index.remember(of_messages(conversation(1, "b")), now=0.0)
    index.answered(asked, now=1.0, answer="a answer 1")
    next_turn = of_messages([*conversation(2, "a"), {"role": "user", "content": "and?"}])
    assert index.match(next_turn) == of_messages(conversation(2, "a")).total_tokens
    assert index.match(next_turn) > asked.total_tokens
    trimmed = [*conversation(2, "a")[:-1], {"role": "assistant", "content": "a answer"}]
    retold = of_messages([*trimmed, {"role": "user", "content": "and?"}])
    assert index.match(retold) == asked.total_tokens
    index.remember(retold, now=2.0)
    assert len(index) == 2
    assert index.match(of_messages(conversation(2, "b"))) > 100  # b was not pushed out


def test_an_index_holds_at_least_one_prompt() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PrefixIndex(0)


class Reference(CacheSlots[Prompt]):
    """The index as it was first written, over :class:`CacheSlots`' plain lists: every
    lookup compares the prompt with each held one. :class:`PrefixIndex` must decide as it
    does, whatever happens."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots, Prompt.shared)
        self.visits: dict[Prompt, Visit] = {}

    def remember(self, prompt: Prompt, now: float = 0.0) -> Prompt | None:
        extended = super().remember(prompt)
        before = self.visits.get(extended) if extended is not None else None
        interval = now - before.at if before is not None and now > before.at else None
        self.visits[prompt] = Visit(now, interval)
        if len(self.visits) > len(self._held):
            self.visits = {p: v for p in self._held if (v := self.visits.get(p)) is not None}
        return extended

    def answered(self, prompt: Prompt, now: float, answer: str | None = None) -> None:
        visit = self.visits.get(prompt)
        if visit is None:
            return
        visit.answered = now
        grown = prompt.followed_by({"role": "assistant", "content": answer}) if answer else None
        if grown is not None and self.grow(prompt, grown):
            self.visits[grown] = self.visits.pop(prompt)

    def ended(self, prompt: Prompt, now: float) -> bool:
        visit = self.visits.get(prompt)
        if visit is None or visit.answered is None or visit.interval is None:
            return False
        return now - visit.answered > RETURN_PERIODS * visit.interval

    def match(self, prompt: Prompt) -> int:
        best = self.longest(prompt)
        return prompt.tokens[best - 1] if best else 0

    def displaced(self, prompt: Prompt, now: float = 0.0) -> int:
        evicted = self.evicts(prompt)
        if evicted is None or not evicted.conversation or self.ended(evicted, now):
            return 0
        return evicted.total_tokens

    def held(self) -> list[Prompt]:
        return list(self._held)


SAID = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "one " * 40},
    {"role": "user", "content": "two " * 40},
    {"role": "assistant", "content": "yes " * 10},
    {"role": "assistant", "content": "no"},
]
ANSWERS = [None, "", "yes " * 10, "no", "maybe " * 20]


def some_prompt(pick: random.Random) -> Prompt:
    """A prompt from a small world, so that prompts share prefixes, extend one another and
    come again as equal copies (each a new object, as each request makes its own)."""
    if pick.random() < 0.1:
        return of_text("raw " * pick.randrange(0, 700))
    messages = [pick.choice(SAID) for _ in range(pick.randrange(0, 6))]
    if messages and pick.random() < 0.5:
        messages[0] = SAID[0]
    return of_messages(messages)


def trie(index: PrefixIndex) -> tuple[set[tuple[bytes, ...]], int]:
    """The chains an index keeps boundaries for, and the marks those boundaries carry."""
    chains: set[tuple[bytes, ...]] = set()
    marks, nodes = 0, [(index._root, tuple[bytes, ...]())]
    while nodes:
        node, chain = nodes.pop()
        chains.add(chain)
        marks += len(node.held or ())
        children = [node.only] if node.only is not None else [*(node.branches or {}).values()]
        assert node.branches is None or len(node.branches) > 1
        nodes.extend((child, (*chain, child.digest)) for child in children)
    return chains, marks


@pytest.mark.parametrize("seed", range(40))
def test_the_index_decides_as_a_scan_of_every_held_prompt_does(seed: int) -> None:
    """Random turns, answers and lookups, on few slots and on many: the same prompts held in
    the same order, the same matches, evictions, extensions and ended conversations."""
    pick = random.Random(seed)
    slots = pick.choice([1, 2, 3, 5, 8, 64])
    index, reference = PrefixIndex(slots), Reference(slots)
    now, sent = 0.0, [some_prompt(pick)]
    for _ in range(400):
        now += pick.choice([0.0, 0.5, 3.0, 40.0])
        prompt = some_prompt(pick) if pick.random() < 0.6 else pick.choice(sent)
        action = pick.random()
        if action < 0.4:
            sent.append(prompt)
            assert index.remember(prompt, now) == reference.remember(prompt, now)
        elif action < 0.7:
            answered, answer = pick.choice([prompt, *sent[-3:]]), pick.choice(ANSWERS)
            index.answered(answered, now, answer)
            reference.answered(answered, now, answer)
        assert index.match(prompt) == reference.match(prompt)
        assert index.displaced(prompt, now) == reference.displaced(prompt, now)
        assert index.predict(prompt, now) == (
            reference.match(prompt),
            reference.displaced(prompt, now),
        )
        assert len(index) == len(reference)
        held = reference.held()
        assert [slot.prompt for slot in index._order] == held
        assert [index.ended(p, now) for p in held] == [reference.ended(p, now) for p in held]
        # the index keeps no boundary but those of the prompts it holds
        chains, marks = trie(index)
        assert chains == {(), *(p.digests[:n] for p in held for n in range(len(p) + 1))}
        assert marks == sum(1 if slot.asked is slot.end else 2 for slot in index._order)


def lines_run(action: Callable[[], object]) -> int:
    """The lines of :mod:`ganglion.prefixes` that ``action`` runs: a count of the work done,
    the same on every run (a timing is not)."""
    count = 0

    def each_line(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        count += event == "line"
        return each_line

    def each_call(frame: FrameType, event: str, arg: Any) -> Any:
        return each_line if frame.f_code.co_filename == prefixes.__file__ else None

    before = sys.gettrace()
    sys.settrace(each_call)
    try:
        action()
    finally:
        sys.settrace(before)
    return count


def full_of_conversations(index: PrefixIndex | Reference) -> list[list[dict[str, str]]]:
    """``index`` with every slot held by a conversation of its own, answered; all of them
    share a system prompt (the worst case for a look-up by the first message)."""
    said = []
    for number in range(index.slots):
        messages = [SAID[0], {"role": "user", "content": f"conversation {number} " + "x" * 99}]
        prompt = of_messages(messages)
        index.remember(prompt, now=1.0)
        index.answered(prompt, now=2.0, answer=f"answer {number}")
        said.append([*messages, {"role": "assistant", "content": f"answer {number}"}])
    return said


def work_per_turn(index: PrefixIndex | Reference) -> list[int]:
    """The lines run to match, take and answer the next turn of the conversation read last,
    and to weigh up and take a new conversation (which pushes one out)."""
    said = full_of_conversations(index)
    next_turn = of_messages([*said[-1], {"role": "user", "content": "and then?"}])
    new = of_messages([SAID[0], {"role": "user", "content": "a new conversation"}])
    return [
        lines_run(lambda: index.match(next_turn)),
        lines_run(lambda: index.displaced(new, now=3.0)),
        lines_run(lambda: index.remember(next_turn, now=3.0)),
        lines_run(lambda: index.answered(next_turn, now=4.0, answer="more")),
        lines_run(lambda: index.remember(new, now=5.0)),
    ]


def test_a_turn_costs_the_same_work_with_16_slots_held_or_256() -> None:
    """Matching, taking and answering a turn walk the turn's own chain: the work does not
    grow with the prompts held (it did: every one was compared, 256 on a busy neuron)."""
    assert work_per_turn(PrefixIndex(16)) == work_per_turn(PrefixIndex(256))
    few, many = work_per_turn(Reference(16)), work_per_turn(Reference(256))
    assert all(m > 10 * f for f, m in zip(few, many, strict=True))  # as it was


def test_many_slots_push_out_the_least_recently_read_first() -> None:
    index = PrefixIndex(256)
    said = full_of_conversations(index)
    for number in range(254, -1, -2):  # the even ones come back, the last first
        index.remember(of_messages([*said[number], {"role": "user", "content": "again"}]), 3.0)
    for number in range(192):  # new conversations push out the odd ones, then 254, 252...
        index.remember(of_messages([{"role": "user", "content": f"new {number}"}]), now=4.0)
    held = [index.match(of_messages([*s, {"role": "user", "content": "?"}])) > 30 for s in said]
    assert held == [number % 2 == 0 and number < 128 for number in range(256)]
    assert len(index) == 256
