"""API keys: who may use the gateway, and who may change the fleet.

A key reads ``gk_<prefix>_<secret>``. The prefix (8 hex characters) names the key in
listings and finds it in the store; the secret is ``secrets.token_urlsafe(32)``, 256 random
bits. The key is shown once, at creation, and never stored, logged or echoed.

What is stored is ``sha256$<salt>$<digest>``: SHA-256 over a random 16-byte per-key salt and
the whole key. A fast hash is enough here, unlike for passwords: nobody can guess or
brute-force 256 random bits, so a slow KDF (scrypt, argon2) would add nothing but tens of
milliseconds of CPU to every request. The salt keeps two databases from sharing a hash.
Digests are compared with :func:`hmac.compare_digest`.

The rules (``docs/security.md``):

- Keys are *enforced* when the gateway binds a non-loopback address, or when
  ``require_keys`` is set (``GANGLION_REQUIRE_KEYS``, ``ganglion serve --require-keys``).
  On the default loopback bind nothing is checked.
- When enforced, :func:`user_access` needs a valid, unrevoked key of either role, and
  :func:`fleet_access` needs one to read (GET, HEAD, OPTIONS) and an ``admin`` key for
  anything else.
- No key, or a malformed, wrong or revoked one: 401 with ``WWW-Authenticate: Bearer``. A
  user key on an admin action: 403.
- A key comes as ``Authorization: Bearer KEY`` (the OpenAI clients' ``api_key``, the Ollama
  clients' ``OLLAMA_API_KEY``, ganglion's ``--api-key``) or ``X-API-Key: KEY``.
- A request's key is looked up by prefix in a :class:`KeyBook`, which reads the store again
  once the row it holds is ``key_recheck_s`` old (1 s by default): a revoked key stops
  working within that, and a new key works at once.
- A non-loopback bind needs an active admin key before it starts
  (:func:`ganglion.gateway.server.preflight`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from fastapi import Request

from ganglion.errors import AdminRequired, ConfigError, KeyRequired
from ganglion.store import Store
from ganglion.store.schema import ApiKeyRow

if TYPE_CHECKING:
    from ganglion.gateway.state import Gateway

KEY_PATTERN = re.compile(r"gk_([0-9a-f]{8})_[A-Za-z0-9_-]{32,}")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOW_TO_SEND = (
    "send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (ganglion commands: --api-key "
    "or GANGLION_API_KEY; Ollama clients: OLLAMA_API_KEY; OpenAI clients: api_key)"
)


class Role(StrEnum):
    ADMIN = "admin"  # may change the fleet
    USER = "user"  # may use it: chat, generate, read the fleet, metrics


# the keys themselves


def new_key() -> tuple[str, str]:
    """A fresh ``(prefix, key)``."""
    prefix = secrets.token_hex(4)
    return prefix, f"gk_{prefix}_{secrets.token_urlsafe(32)}"


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, else ``None``."""
    match = KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def hash_key(key: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.sha256(salt + key.encode()).hexdigest()
    return f"sha256${salt.hex()}${digest}"


def verify_key(key: str, stored: str) -> bool:
    scheme, _, rest = stored.partition("$")
    salt, _, digest = rest.partition("$")
    if scheme != "sha256" or not digest:
        return False
    expected = hash_key(key, bytes.fromhex(salt)).rpartition("$")[2]
    return hmac.compare_digest(expected, digest)


def key_row(key: str, prefix: str, role: Role, name: str | None) -> ApiKeyRow:
    """The row that stores ``key``: its prefix, salted hash and role; ``ROLE-PREFIX`` unless
    named."""
    return ApiKeyRow(
        name=name or f"{role.value}-{prefix}",
        prefix=prefix,
        key_hash=hash_key(key),
        role=role.value,
    )


def create_key(store: Store, role: Role, name: str | None = None) -> tuple[str, ApiKeyRow]:
    """Store a new key and return it (the only time it exists in the clear) with its row."""
    for _ in range(5):  # 8 hex characters: a clash is rare, and then we draw again
        prefix, key = new_key()
        row = key_row(key, prefix, role, name)
        if store.add_api_key(row) is not None:
            return key, row
    raise RuntimeError("could not draw an unused key prefix in 5 tries")  # pragma: no cover


def import_key(store: Store, key: str, role: Role, name: str | None = None) -> ApiKeyRow:
    """Store ``key``, made elsewhere (a Kubernetes Secret), unless it is stored already:
    importing the same key again, as each replica's start does, changes nothing. Raises
    :class:`ConfigError` for a malformed key, or one whose prefix another key holds."""
    prefix = key_prefix(key)
    if prefix is None:
        raise ConfigError(
            "not an API key: a key reads gk_<8 hex>_<32 or more of A-Z a-z 0-9 _ ->; make one "
            "with ganglion keys generate"
        )
    row = key_row(key, prefix, role, name)
    if store.add_api_key(row) is not None:
        return row
    stored = store.api_key(prefix)
    if stored is None or not verify_key(key, stored.key_hash):
        raise ConfigError(
            f"another API key already has the prefix {prefix}: generate a new key to import"
        )
    return stored


def authorize(stored: ApiKeyRow | None, key: str, *, admin: bool) -> None:
    """Raise unless ``stored`` (the row found by ``key``'s prefix) lets ``key`` in."""
    if stored is None or stored.revoked_at is not None or not verify_key(key, stored.key_hash):
        raise KeyRequired(
            "the API key is not valid (wrong, or revoked): ask the gateway's admin for one "
            f"(ganglion keys create) and {HOW_TO_SEND}"
        )
    if admin and stored.role != Role.ADMIN:
        raise AdminRequired(
            f"changing the fleet needs an admin API key; key {stored.prefix} is a "
            f"{stored.role} key: use an admin key (ganglion keys create --admin)"
        )


class KeyBook:
    """The stored keys the gateway has read lately, by prefix, so that a request seldom waits
    on the store (a read in a worker thread costs about three times what the gateway spends on
    a whole answer).

    A row read less than ``recheck_s`` ago is trusted; an older one is read again. So a
    revocation takes effect within ``recheck_s``, and with 0 every request reads the store. A
    prefix the store does not hold is not remembered: a key created after the gateway started
    works at once. Only stored rows are held, never a key."""

    def __init__(
        self, store: Store, recheck_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.recheck_s = recheck_s
        self.clock = clock
        self._rows: dict[str, tuple[ApiKeyRow, float]] = {}

    async def row(self, prefix: str) -> ApiKeyRow | None:
        """The stored row for ``prefix``, or ``None`` when no key has it."""
        now = self.clock()
        held = self._rows.get(prefix)
        if held is not None and now - held[1] < self.recheck_s:
            return held[0]
        row = await asyncio.to_thread(self.store.api_key, prefix)
        if row is None:
            self._rows.pop(prefix, None)
        else:
            self._rows[prefix] = (row, now)
        return row


# the requests


def presented_key(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key", "").strip() or None


async def _check(request: Request, *, admin: bool) -> None:
    gateway: Gateway = request.app.state.gateway
    if not gateway.settings.keys_enforced:
        return
    key = presented_key(request)
    if key is None:
        raise KeyRequired(f"this gateway needs an API key: {HOW_TO_SEND}")
    prefix = key_prefix(key)
    stored = None if prefix is None else await gateway.keys.row(prefix)
    authorize(stored, key, admin=admin)


async def user_access(request: Request) -> None:
    """Any valid key (user or admin) when keys are enforced; nothing on an open loopback bind."""
    await _check(request, admin=False)


async def fleet_access(request: Request) -> None:
    """Reading the fleet needs a user key, changing it an admin key, when keys are enforced."""
    await _check(request, admin=request.method not in READ_METHODS)
