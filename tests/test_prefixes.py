"""The prompt prefixes a neuron is predicted to hold: hash chains, and slots evicted LRU."""

from __future__ import annotations

import pytest

from ganglion.prefixes import BLOCK_CHARS, RETURN_PERIODS, PrefixIndex, of_messages, of_text


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
