"""Which prompt prefixes a neuron is predicted to hold in its KV cache.

Chat clients resend the whole conversation each turn. A server that answered the earlier
turns keeps their prompt in its cache (llama.cpp's slots with ``cache_prompt``, Ollama's
per-model parallel slots, vLLM's prefix cache), so the next turn reads only what is new.

A prompt becomes a *hash chain* (:class:`Prompt`): one digest per message boundary, each
covering every message up to there (role, content and any other field), with the prompt's
estimated length in tokens at that boundary. A raw completion prompt is chained every
:data:`BLOCK_CHARS` characters. Each message is hashed once, incrementally (BLAKE2b), from
the body the gateway already parsed: nothing is serialised again but non-text content.

A :class:`PrefixIndex` (a :class:`CacheSlots` of hash chains; the simulator keeps its own
cache in a :class:`CacheSlots` of tokens) is what one neuron holds for one model: at most
``slots`` prompts, evicted least recently used first, as such a server evicts its slots. A
prompt that extends one it holds (the next turn of that conversation) takes that prompt's
place, as the server reuses the slot whose cache matches. :meth:`PrefixIndex.match` gives
the tokens of the longest held prefix of a new prompt: the part its prefill can skip.
:meth:`PrefixIndex.displaced` gives the tokens of the conversation a new prompt would push
out, unless that conversation has ended: answered, and silent for :data:`RETURN_PERIODS`
times the interval between its last two turns (chats end all the time, and a cache full of
ended ones must not keep new conversations away from a neuron that is free).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Generic, TypeVar

CHARS_PER_TOKEN = 4
"""The routing estimate of a prompt's length: about four characters a token."""

BLOCK_CHARS = 1024
"""A raw prompt (``/api/generate``, ``/v1/completions``) is chained in blocks this long."""

RETURN_PERIODS = 2.0
"""A conversation whose next turn is this many of its usual intervals late (counted from its
last answer) is taken to have ended: pushing its prompt out of a cache costs nothing."""

DIGEST_BYTES = 8
_SEPARATOR = b"\x1e"


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt as a hash chain: ``digests[i]`` covers the prompt up to its ``i``-th
    boundary, which ends ``tokens[i]`` (estimated) tokens in."""

    digests: tuple[bytes, ...] = ()
    tokens: tuple[int, ...] = ()
    conversation: bool = False
    """A chat's messages, which a next turn usually follows (a raw prompt is not taken to
    come back)."""
    end: _End | None = field(default=None, compare=False, repr=False)
    """Where a chat's chain stands after its last message, to chain one more onto it."""

    def __len__(self) -> int:
        return len(self.digests)

    @property
    def total_tokens(self) -> int:
        return self.tokens[-1] if self.tokens else 0

    def shared(self, other: Prompt) -> int:
        """How many leading boundaries this prompt and ``other`` have in common."""
        common = min(len(self.digests), len(other.digests))
        if self.digests[:common] == other.digests[:common]:  # one goes on from the other
            return common
        count = 0
        for mine, theirs in zip(self.digests, other.digests, strict=False):
            if mine != theirs:
                break
            count += 1
        return count

    def followed_by(self, message: Mapping[str, object]) -> Prompt | None:
        """This chat with ``message`` after it (the answer a neuron wrote), hashing only
        ``message``; None for a prompt that is not a chat's messages."""
        if self.end is None:
            return None
        chain, chars = self.end.chain.copy(), self.end.chars
        chars += _chain_message(chain, message)
        digests = (*self.digests, chain.copy().digest())
        tokens = (*self.tokens, chars // CHARS_PER_TOKEN)
        return Prompt(digests, tokens, conversation=True, end=_End(chain, chars))


@dataclass(frozen=True, slots=True)
class _End:
    chain: hashlib.blake2b
    chars: int


def of_messages(messages: Iterable[Mapping[str, object]]) -> Prompt:
    """The hash chain of a chat's messages (the boundaries fall between messages)."""
    chain = hashlib.blake2b(digest_size=DIGEST_BYTES)
    digests: list[bytes] = []
    tokens: list[int] = []
    chars = 0
    for message in messages:
        chars += _chain_message(chain, message)
        digests.append(chain.copy().digest())
        tokens.append(chars // CHARS_PER_TOKEN)
    return Prompt(tuple(digests), tuple(tokens), conversation=True, end=_End(chain, chars))


def _chain_message(chain: hashlib.blake2b, message: Mapping[str, object]) -> int:
    """Hash one message onto ``chain`` (role, content and any other field); its characters."""
    role, content = message.get("role"), message.get("content", "")
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
    chain.update(f"{role}\x00".encode())
    chain.update(text.encode("utf-8", "surrogatepass"))
    if len(message) > 2 or "role" not in message or "content" not in message:
        others = {k: v for k, v in message.items() if k not in ("role", "content")}
        chain.update(json.dumps(others, sort_keys=True, default=str).encode())
    chain.update(_SEPARATOR)
    return len(text)


def of_text(*texts: object) -> Prompt:
    """The hash chain of a raw prompt, one boundary every :data:`BLOCK_CHARS` characters:
    the same text grown at its end keeps its earlier blocks' digests. Non-text parts
    (embedding inputs) are written as JSON."""
    text = "".join(t if isinstance(t, str) else json.dumps(t) for t in texts)
    chain = hashlib.blake2b(digest_size=DIGEST_BYTES)
    digests: list[bytes] = []
    tokens: list[int] = []
    for start in range(0, len(text), BLOCK_CHARS):
        block = text[start : start + BLOCK_CHARS]
        chain.update(block.encode("utf-8", "surrogatepass"))
        digests.append(chain.copy().digest())
        tokens.append((start + len(block)) // CHARS_PER_TOKEN)
    return Prompt(tuple(digests), tuple(tokens))


Held = TypeVar("Held", bound=Sized)


class CacheSlots(Generic[Held]):
    """What a server's prompt cache holds: at most ``slots`` prompts, the least recently
    read evicted first. ``shared(a, b)`` counts the leading units (boundaries, tokens) two
    prompts have in common; ``len(prompt)`` is its units. The simulator keeps its cache with
    this too, in tokens."""

    def __init__(self, slots: int, shared: Callable[[Held, Held], int]) -> None:
        self.slots = slots
        self.shared = shared
        self._held: list[Held] = []  # least recently read first
        self._asked: list[int] = []  # the units of each that were its prompt (then: its answer)

    def __len__(self) -> int:
        return len(self._held)

    def longest(self, prompt: Held) -> int:
        """The most leading units ``prompt`` shares with a prompt held here (0: none)."""
        return max((self.shared(prompt, held) for held in self._held), default=0)

    def remember(self, prompt: Held) -> Held | None:
        """``prompt`` was read: it is held now, in the place of a prompt it extends (that
        conversation's earlier turn: the server reuses the slot that matches), else in the
        least recently read one's. Returns the prompt it extends, if one was held."""
        if not self.slots or not len(prompt):
            return None
        extended = self._extended(prompt)
        before = None
        if extended is not None:
            before = self._held.pop(extended)
            del self._asked[extended]
        elif len(self._held) >= self.slots:
            del self._held[0], self._asked[0]
        self._held.append(prompt)
        self._asked.append(len(prompt))
        return before

    def grow(self, prompt: Held, answered: Held) -> bool:
        """The server wrote an answer after ``prompt``: its slot holds ``answered`` (the
        prompt, then the answer) now. The conversation's next prompt takes that slot whether
        or not it repeats the answer as written. False: ``prompt`` is no longer held."""
        for index, held in enumerate(self._held):
            if held is prompt or held == prompt:
                self._held[index] = answered
                return True
        return False

    def evicts(self, prompt: Held) -> Held | None:
        """The prompt that remembering ``prompt`` would push out, if any."""
        if not self.slots or len(self._held) < self.slots or self._extended(prompt) is not None:
            return None
        return self._held[0]

    def _extended(self, prompt: Held) -> int | None:
        """Where the held prompt that ``prompt`` starts with is, if one is (its answer may
        differ: a client may trim it)."""
        for index, held in enumerate(self._held):
            if self.shared(prompt, held) >= self._asked[index]:
                return index
        return None

    def clear(self) -> None:
        self._held.clear()
        self._asked.clear()


@dataclass(slots=True)
class Visit:
    """The latest turn of a conversation a :class:`PrefixIndex` holds."""

    at: float
    """When it came."""
    interval: float | None
    """How long after the turn before it (None: the first turn held here)."""
    answered: float | None = None
    """When its answer ended (None: still being written)."""


class PrefixIndex(CacheSlots[Prompt]):
    """The prompts one neuron is predicted to hold for one model, as hash chains, and when
    each conversation last came (``now``: the router's clock)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a prefix index holds at least one prompt, not {slots}")
        super().__init__(slots, Prompt.shared)
        self._visits: dict[Prompt, Visit] = {}  # bound: the prompts held

    def remember(self, prompt: Prompt, now: float = 0.0) -> Prompt | None:
        extended = super().remember(prompt)
        before = self._visits.get(extended) if extended is not None else None
        interval = now - before.at if before is not None and now > before.at else None
        self._visits[prompt] = Visit(now, interval)
        if len(self._visits) > len(self._held):
            self._visits = {p: v for p in self._held if (v := self._visits.get(p)) is not None}
        return extended

    def answered(self, prompt: Prompt, now: float, answer: str | None = None) -> None:
        """``prompt``'s answer ended (or failed) at ``now``. The neuron's cache holds the
        ``answer`` it wrote too, if given (a chat's whole answer): the next turn, which
        repeats it as the assistant's message, finds it there."""
        visit = self._visits.get(prompt)
        if visit is None:
            return
        visit.answered = now
        grown = prompt.followed_by({"role": "assistant", "content": answer}) if answer else None
        if grown is not None and self.grow(prompt, grown):
            self._visits[grown] = self._visits.pop(prompt)

    def ended(self, prompt: Prompt, now: float) -> bool:
        """Whether the conversation ``prompt`` belongs to is taken to have ended: answered,
        and no next turn for :data:`RETURN_PERIODS` times its interval between turns (one
        seen once is taken to come back)."""
        visit = self._visits.get(prompt)
        if visit is None or visit.answered is None or visit.interval is None:
            return False
        return now - visit.answered > RETURN_PERIODS * visit.interval

    def match(self, prompt: Prompt) -> int:
        """The tokens of ``prompt``'s longest prefix held here (0: none)."""
        best = self.longest(prompt)
        return prompt.tokens[best - 1] if best else 0

    def displaced(self, prompt: Prompt, now: float = 0.0) -> int:
        """The tokens of the conversation that serving ``prompt`` here would push out (0:
        none, a raw prompt, not taken to come back, or a conversation that has ended)."""
        evicted = self.evicts(prompt)
        if evicted is None or not evicted.conversation or self.ended(evicted, now):
            return 0
        return evicted.total_tokens
