"""Which prompt prefixes a neuron is predicted to hold in its KV cache.

Chat clients resend the whole conversation each turn. A server that answered the earlier
turns keeps their prompt in its cache (llama.cpp's slots with ``cache_prompt``, Ollama's
per-model parallel slots, vLLM's prefix cache), so the next turn reads only what is new.

A prompt becomes a *hash chain* (:class:`Prompt`): one digest per message boundary, each
covering every message up to there (role, content and any other field), with the prompt's
estimated length in tokens at that boundary. A raw completion prompt is chained every
:data:`BLOCK_CHARS` characters. Each message is hashed once, incrementally (BLAKE2b), from
the body the gateway already parsed: nothing is serialised again but non-text content (and a
digest is read off the chain as it goes: ``digest()`` leaves a BLAKE2b open to more).

A :class:`PrefixIndex` is what one neuron holds for one model: at most ``slots`` prompts,
evicted least recently used first, as such a server evicts its slots. A prompt that extends
one it holds (the next turn of that conversation) takes that prompt's place, as the server
reuses the slot whose cache matches. It keeps the held chains in a trie, so a look-up walks
the prompt's own chain, however many prompts are held. (The simulator keeps its own cache
by the same rules in a :class:`CacheSlots` of tokens, which compares each held prompt.)
:meth:`PrefixIndex.match` gives the tokens of the longest held prefix of a new prompt: the
part its prefill can skip.
:meth:`PrefixIndex.displaced` gives the tokens of the conversation a new prompt would push
out, unless that conversation has ended: answered, and silent for :data:`RETURN_PERIODS`
times the interval between its last two turns (chats end all the time, and a cache full of
ended ones must not keep new conversations away from a neuron that is free).
"""

from __future__ import annotations

import hashlib
import itertools
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


@dataclass(slots=True, unsafe_hash=True)
class Prompt:
    """A prompt as a hash chain: ``digests[i]`` covers the prompt up to its ``i``-th
    boundary, which ends ``tokens[i]`` (estimated) tokens in.

    A value, never changed once made, though not a frozen dataclass: every request makes
    one or two, and a frozen one costs about four times as much to build."""

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
        digests = (*self.digests, chain.digest())
        tokens = (*self.tokens, chars // CHARS_PER_TOKEN)
        return Prompt(digests, tokens, conversation=True, end=_End(chain, chars))


@dataclass(slots=True)
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
        digests.append(chain.digest())
        tokens.append(chars // CHARS_PER_TOKEN)
    return Prompt(tuple(digests), tuple(tokens), conversation=True, end=_End(chain, chars))


def _chain_message(chain: hashlib.blake2b, message: Mapping[str, object]) -> int:
    """Hash one message onto ``chain`` (role, content and any other field); its characters."""
    role, content = message.get("role"), message.get("content", "")
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
    if len(message) == 2 and "role" in message and "content" in message:  # most messages
        chain.update(f"{role}\x00{text}\x1e".encode("utf-8", "surrogatepass"))
        return len(text)
    chain.update(f"{role}\x00{text}".encode("utf-8", "surrogatepass"))
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
        digests.append(chain.digest())
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


_Key = tuple[tuple[bytes, ...], tuple[int, ...], bool]
"""What tells prompts apart (:class:`Prompt`'s equality), as a plain tuple: hashed and
compared in C, where a prompt's own ``__hash__`` and ``__eq__`` run in Python."""


class _Boundary:
    """One boundary of the held prompts' hash chains, in a trie: the prompts that agree up
    to a boundary pass through the same one. It lives while a held prompt passes through.

    Most boundaries lead on to one other (a conversation's own turns): that one is kept as
    ``only``, and a dict of ``branches`` only where prompts part (a dict costs three times
    the boundary itself)."""

    __slots__ = ("branches", "depth", "digest", "held", "only", "parent")

    def __init__(self, digest: bytes, depth: int, parent: _Boundary | None) -> None:
        self.digest = digest
        self.depth = depth
        self.parent = parent
        self.only: _Boundary | None = None
        self.branches: dict[bytes, _Boundary] | None = None  # None while one or none
        self.held: list[_Slot] | None = None
        """The slots whose prompt was asked up to here, or whose prompt ends here."""

    def then(self, digest: bytes) -> _Boundary:
        """The boundary after this one with ``digest``, made if none is held yet."""
        only, branches = self.only, self.branches
        if only is not None:
            if only.digest == digest:
                return only
            child = _Boundary(digest, self.depth + 1, self)
            self.branches, self.only = {only.digest: only, digest: child}, None
            return child
        if branches is None:
            child = self.only = _Boundary(digest, self.depth + 1, self)
            return child
        held = branches.get(digest)
        if held is None:
            held = branches[digest] = _Boundary(digest, self.depth + 1, self)
        return held

    def prune(self) -> None:
        """Let go of this boundary and those before it that no held prompt passes through."""
        node, parent = self, self.parent
        while parent is not None and node.only is None and node.branches is None:
            if node.held:
                return
            if parent.only is node:
                parent.only = None
            elif parent.branches is not None:
                del parent.branches[node.digest]
                if len(parent.branches) == 1:
                    (parent.only,) = parent.branches.values()
                    parent.branches = None
            node, parent = parent, parent.parent


class _Slot:
    """One prompt a :class:`PrefixIndex` holds: where its question ends in the trie
    (``asked``), where it ends now (``end``: past the answer, once grown), and when it was
    last read (``stamp``: higher is later)."""

    __slots__ = ("asked", "end", "key", "prompt", "stamp")

    def __init__(self, prompt: Prompt, key: _Key, stamp: int, end: _Boundary) -> None:
        self.prompt = prompt
        self.key = key
        self.stamp = stamp
        self.asked = end
        self.end = end


class PrefixIndex:
    """The prompts one neuron is predicted to hold for one model, as hash chains, and when
    each conversation last came (``now``: the router's clock).

    It keeps :class:`CacheSlots`' rules (least recently read evicted first; a prompt that
    extends a held one takes its place; an answer grows its prompt's slot) in a trie of
    the held chains, so that matching, remembering and growing a prompt walk its own chain
    once, whatever the number of slots: a neuron with 256 slots holds 256 prompts, and a
    scan of them all on each request cost more than the rest of the routing."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a prefix index holds at least one prompt, not {slots}")
        self.slots = slots
        self._root = _Boundary(b"", 0, None)
        self._order: dict[_Slot, None] = {}  # least recently read first; bound: slots
        self._visits: dict[_Key, Visit] = {}  # by prompt, as Prompt's equality; bound: slots
        self._stamps = itertools.count()

    def __len__(self) -> int:
        return len(self._order)

    def remember(self, prompt: Prompt, now: float = 0.0) -> Prompt | None:
        """``prompt`` was read at ``now``: it is held from now on, in the place of a prompt
        it extends (that conversation's earlier turn: the server reuses the slot that
        matches; the least recently read of them, if several), else in the least recently
        read one's. Returns the prompt it extends, if one was held."""
        digests = prompt.digests
        if not digests:
            return None
        node, extended = self._find(digests)
        for digest in digests[node.depth :]:
            node = node.then(digest)
        key = (digests, prompt.tokens, prompt.conversation)
        slot = _Slot(prompt, key, next(self._stamps), node)
        _mark(node, slot)
        self._order[slot] = None
        before = None
        if extended is not None:
            before = self._visits.get(extended.key)
            self._drop(extended)
        elif len(self._order) > self.slots:
            self._drop(next(iter(self._order)))
        interval = now - before.at if before is not None and now > before.at else None
        self._visits[key] = Visit(now, interval)
        return extended.prompt if extended is not None else None

    def answered(self, prompt: Prompt, now: float, answer: str | None = None) -> None:
        """``prompt``'s answer ended (or failed) at ``now``. The neuron's cache holds the
        ``answer`` it wrote too, if given (a chat's whole answer): the next turn, which
        repeats it as the assistant's message, finds it there, and takes that slot whether
        or not it repeats the answer as written."""
        key = (prompt.digests, prompt.tokens, prompt.conversation)
        visit = self._visits.get(key)
        if visit is None:
            return
        visit.answered = now
        grown = prompt.followed_by({"role": "assistant", "content": answer}) if answer else None
        slot = self._holding(prompt, key) if grown is not None else None
        if grown is None or slot is None:
            return
        node = slot.end
        if slot.asked is not node:
            _unmark(node, slot)
        for digest in grown.digests[node.depth :]:
            node = node.then(digest)
        _mark(node, slot)
        slot.prompt, slot.end = grown, node
        slot.key = (grown.digests, grown.tokens, grown.conversation)
        self._visits[slot.key] = self._visits.pop(key)

    def ended(self, prompt: Prompt, now: float) -> bool:
        """Whether the conversation ``prompt`` belongs to is taken to have ended: answered,
        and no next turn for :data:`RETURN_PERIODS` times its interval between turns (one
        seen once is taken to come back)."""
        visit = self._visits.get((prompt.digests, prompt.tokens, prompt.conversation))
        if visit is None or visit.answered is None or visit.interval is None:
            return False
        return now - visit.answered > RETURN_PERIODS * visit.interval

    def match(self, prompt: Prompt) -> int:
        """The tokens of ``prompt``'s longest prefix held here (0: none)."""
        return self.predict(prompt)[0]

    def displaced(self, prompt: Prompt, now: float = 0.0) -> int:
        """The tokens of the conversation that serving ``prompt`` here would push out (0:
        none, a raw prompt, not taken to come back, or a conversation that has ended)."""
        return self.predict(prompt, now)[1]

    def predict(self, prompt: Prompt, now: float = 0.0) -> tuple[int, int]:
        """:meth:`match` and :meth:`displaced` at once, from one walk of ``prompt``'s chain."""
        node, extended = self._find(prompt.digests)
        cached = prompt.tokens[node.depth - 1] if node.depth else 0
        if extended is not None or len(self._order) < self.slots:
            return cached, 0
        evicted = next(iter(self._order)).prompt
        if not evicted.conversation or self.ended(evicted, now):
            return cached, 0
        return cached, evicted.total_tokens

    def clear(self) -> None:
        self._root = _Boundary(b"", 0, None)
        self._order.clear()
        self._visits.clear()

    def _find(self, digests: tuple[bytes, ...]) -> tuple[_Boundary, _Slot | None]:
        """The deepest boundary of ``digests`` held here, and the least recently read slot
        whose question ``digests`` starts with (the one a prompt with them extends)."""
        node, extended = self._root, None
        for digest in digests:
            child = node.only
            if child is None or child.digest != digest:
                child = node.branches.get(digest) if node.branches is not None else None
                if child is None:
                    break
            node = child
            for slot in child.held or ():
                if extended is None or slot.stamp < extended.stamp:
                    extended = slot
        return node, extended

    def _holding(self, prompt: Prompt, key: _Key) -> _Slot | None:
        """The least recently read slot that holds ``prompt`` (or one equal to it)."""
        node = self._root
        for digest in prompt.digests:
            child = node.only
            if child is None or child.digest != digest:
                child = node.branches.get(digest) if node.branches is not None else None
                if child is None:
                    return None
            node = child
        found = None
        for slot in node.held or ():
            same = slot.end is node and (slot.prompt is prompt or slot.key == key)
            if same and (found is None or slot.stamp < found.stamp):
                found = slot
        return found

    def _drop(self, slot: _Slot) -> None:
        """Let go of ``slot``: its prompt, its boundaries no other slot passes through, and
        its visit, unless another slot holds the same prompt."""
        del self._order[slot]
        node = slot.end
        _unmark(node, slot)
        if slot.asked is not node:
            _unmark(slot.asked, slot)
        if not any(other.end is node and other.key == slot.key for other in node.held or ()):
            self._visits.pop(slot.key, None)
        node.prune()


def _mark(node: _Boundary, slot: _Slot) -> None:
    if node.held is None:
        node.held = [slot]
    else:
        node.held.append(slot)


def _unmark(node: _Boundary, slot: _Slot) -> None:
    if node.held is not None:
        node.held.remove(slot)
        if not node.held:
            node.held = None
