"""Network addresses: a neuron's URL, and whether a host is this machine.

A neuron URL has one form everywhere: ``http(s)://HOST[:PORT][/PATH]`` with no trailing slash.
:func:`normalize_url` checks what a user gives (``neuron add``, the config file, discovery);
:func:`base_url` is the same rule for an adapter, which also takes a bare ``HOST:PORT``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import resource
from urllib.parse import urlsplit

from ganglion.errors import FleetError

LOOPBACK_NAMES = frozenset({"localhost"})


def raise_open_files(wanted: int | None = None) -> int:
    """Raise this process's soft limit on open files (sockets among them) to ``wanted``, or
    as far as the hard limit allows; the soft limit now. Many systems start a process at
    1,024, which a gateway with a connection per neuron outgrows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        return ceiling
    return soft


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an IP address, or an IPv6 one in brackets) is this machine.
    Remembered: the gateway asks about its own bind address on every request."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_url(url: str) -> str:
    """``url`` without a trailing slash, or :class:`FleetError` when it is not a neuron URL:
    ``http`` or ``https``, a host, an optional port and path, and nothing else. Other schemes
    (``file:``, ``ftp:``, ``javascript:``...) are no neurons; credentials (``user:pass@``)
    are refused because neuron URLs are stored and shown as they are; a query or fragment
    would break the API paths appended to the URL."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FleetError(
            f"{url!r} is not a neuron URL: give http://HOST:PORT (Ollama listens on 11434)"
        )
    if "@" in parts.netloc:
        bare = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        raise FleetError(
            f"a neuron URL cannot carry credentials (user:password@): neuron URLs are stored "
            f"and shown in neuron list as they are. Give {bare}; ganglion does not log in to "
            "neurons, so put one that needs a password behind a network you trust"
        )
    if parts.query or parts.fragment:
        raise FleetError(
            f"{url!r} has a query or fragment: give the server's base URL, http://HOST:PORT"
        )
    try:
        _ = parts.port  # parsing the port validates it
    except ValueError:
        raise FleetError(f"{url!r} has an invalid port: give http://HOST:PORT") from None
    return url


def base_url(url: str) -> str:
    """The URL an adapter appends API paths to: ``HOST:PORT`` is taken as
    ``http://HOST:PORT``, then :func:`normalize_url` applies."""
    url = url.strip()
    return normalize_url(url if "://" in url else f"http://{url}")


def default_name(url: str) -> str:
    """A neuron's name when none is given: ``HOST-PORT`` of its (normalized) ``url``."""
    parts = urlsplit(url)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{parts.hostname}-{parts.port or 80}")
