"""Plain HTTP/1.1 GETs on a kept-alive connection of their own: how probes reach a neuron.

A thousand neurons probed every ten seconds are a hundred small GETs a second. Through
aiohttp each cost about 0.2 ms of CPU here: a URL, a request and its headers, a response, a
stream reader and half a dozen futures, every time. Here one costs about a quarter of that:
the request's bytes are built once per path, llhttp (``httptools``, the parser uvicorn
uses) reads the answer, and one future waits for it.

:func:`lean_gets` says which neurons go this way: ``http://`` URLs without credentials,
while the environment sets no proxy; any other goes through aiohttp as before. A neuron keeps
at most one idle connection here, until the server closes it (seen at once, and closed at
this end too) or :meth:`LeanGets.aclose`. A request sent on a kept-alive connection that the
server closed before answering is sent once more on a new one, as aiohttp does for a GET.
"""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

#: A neuron's GETs are a few paths (``/api/ps``, ``/api/tags``, ``/api/version``,
#: ``/v1/models``); their requests' bytes are kept, at most this many.
MAX_PATHS = 16


class NoAnswer(Exception):
    """Nothing answered: no connection, or it closed (or timed out) before the status line.
    ``stale``: a kept-alive connection that the server had closed, found closed before any
    byte came back: worth one more try on a new connection."""

    def __init__(self, why: str, *, stale: bool = False) -> None:
        super().__init__(why)
        self.stale = stale


@dataclass(frozen=True)
class Reply:
    """An answer: its status line, content type and body. ``cut`` says why the body broke
    off after the headers came (and ``body`` is what came), else ``None``."""

    status: int
    reason: str
    content_type: str
    body: bytes
    cut: str | None = None


class _Connection(asyncio.Protocol):
    """One TCP connection to a neuron, asked one GET at a time."""

    def __init__(self) -> None:
        self.open = False
        self.reusable = False
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._reset()

    def _reset(self) -> None:
        self.heard = False  # any byte of this answer
        self.headers_done = False
        self._reason: list[bytes] = []
        self._content_type = b""
        self._delimited = False  # by a Content-Length or chunks, not by the end of the stream
        self._body: list[bytes] = []

    def ask(self, request: bytes) -> asyncio.Future[Reply]:
        assert self._transport is not None
        self._reset()
        self.reusable = False
        self._waiter = self._loop.create_future()
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    def ended_early(self, why: str, *, lost: bool = False) -> Reply:
        """What the answer so far amounts to, now that no more of it will come (``lost``: the
        connection closed): :class:`NoAnswer` before the headers; after them, the reply cut
        off, or whole when the server said no length and closed to end it."""
        if not self.headers_done:
            raise NoAnswer(why, stale=lost and not self.heard)
        return self._reply(None if lost and not self._delimited else why)

    def _reply(self, cut: str | None) -> Reply:
        return Reply(
            status=self._parser.get_status_code(),
            reason=b"".join(self._reason).decode("latin-1"),
            content_type=self._content_type.decode("latin-1"),
            body=b"".join(self._body),
            cut=cut,
        )

    def _settle(self, result: Reply | BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._waiter is not None:
            why = CLOSED if exc is None else f"{type(exc).__name__}: {exc}"
            try:
                self._settle(self.ended_early(why, lost=True))
            except NoAnswer as error:
                self._settle(error)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # the server spoke out of turn: this connection is done
            self.close()
            return
        self.heard = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.close()
            why = f"not an HTTP answer ({exc})"
            self._settle(NoAnswer(why) if not self.headers_done else self._reply(why))

    # httptools' callbacks

    def on_status(self, status: bytes) -> None:
        self._reason.append(status)  # in pieces, when it came in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self._content_type = value
        elif name in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:  # an interim answer: the real one follows
            self._reset()
            return
        self.reusable = self._parser.should_keep_alive()
        self._settle(self._reply(None))


CLOSED = "the server closed the connection"


class LeanGets:
    """One neuron's GETs: at most one idle kept-alive connection, reused for each."""

    def __init__(self, *, connect_s: float | None, read_s: float | None) -> None:
        self.closed = False
        self._connect_s = connect_s
        self._read_s = read_s
        self._idle: _Connection | None = None
        self._requests: dict[str, tuple[str, int, bytes]] = {}  # bounded: MAX_PATHS

    async def get(self, url: str) -> Reply:
        """The answer to ``GET url``; :class:`NoAnswer` when none came."""
        host, port, request = self._request(url)
        connection, self._idle = self._idle, None
        if connection is not None and connection.open:
            try:
                return await self._ask(connection, request)
            except NoAnswer as exc:
                if not exc.stale:
                    raise
        return await self._ask(await self._connect(host, port), request)

    async def aclose(self) -> None:
        self.closed = True
        if self._idle is not None:
            self._idle.close()
            self._idle = None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_s):
                _, connection = await loop.create_connection(_Connection, host, port)
        except TimeoutError:
            raise NoAnswer(f"ConnectTimeout: no connection within {self._connect_s:g} s") from None
        except OSError as exc:
            raise NoAnswer(f"ConnectError: {exc}") from exc
        return connection

    async def _ask(self, connection: _Connection, request: bytes) -> Reply:
        try:
            async with asyncio.timeout(self._read_s):
                reply = await connection.ask(request)
        except TimeoutError:
            connection.close()
            return connection.ended_early("ReadTimeout: no data in time")
        except BaseException:  # cancelled (the probe's own timeout): its answer may yet come
            connection.close()
            raise
        if connection.reusable and connection.open and not self.closed and self._idle is None:
            self._idle = connection
        else:
            connection.close()
        return reply

    def _request(self, url: str) -> tuple[str, int, bytes]:
        """Where to connect for ``url``, and the bytes of its request."""
        known = self._requests.get(url)
        if known is None:
            if len(self._requests) >= MAX_PATHS:
                self._requests.clear()
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n"
            request = f"{head}User-Agent: ganglion\r\n\r\n".encode("ascii")
            known = self._requests[url] = (parts.hostname or "", parts.port or 80, request)
        return known


def lean_gets(base_url: str, *, connect_s: float | None, read_s: float | None) -> LeanGets | None:
    """:class:`LeanGets` for the neuron at ``base_url``, or ``None`` when its GETs should go
    through aiohttp: not plain ``http://``, credentials in the URL, or a proxy set in the
    environment (aiohttp follows it; this does not)."""
    parts = urlsplit(base_url)
    plain = base_url.isascii() and not any(c.isspace() for c in base_url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme != "http"
        or not parts.hostname
        or parts.username is not None
        or not plain
        or not port_ok
        or urllib.request.getproxies()
    ):
        return None
    return LeanGets(connect_s=connect_s, read_s=read_s)
