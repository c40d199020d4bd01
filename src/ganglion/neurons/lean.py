"""Plain HTTP/1.1 to a neuron over kept-alive connections of its own: how the gateway and the
probes reach every ``http://`` neuron.

Each request through aiohttp cost about 0.2 ms of CPU here: a URL, a request and its
headers, a response, a stream reader and half a dozen futures, every time, which was most of
what the gateway spent on a proxied answer. Here one costs a fraction of that: a request's
head is built once per path, llhttp (``httptools``, the parser uvicorn uses) reads the
answer straight off the socket, and one future waits for its head with the first piece of
its body, then one for each next piece.

:func:`lean_client` says which neurons go this way: ``http://`` URLs without credentials,
while the environment sets no proxy; any other goes through aiohttp as before.

**Connections.** A neuron keeps at most :data:`MAX_IDLE` idle connections, the newest used
first; one idle longer than :data:`KEEPALIVE_S` is closed when the neuron is next asked
anything (a probe comes every few seconds). A connection the server closes is seen at once,
and closed at this end too. A request sent on a kept-alive connection that the server had
closed before answering (no byte came back) is sent once more on a new one, as aiohttp and
browsers do: the server never read it.

**Timeouts.** ``connect_s`` for the connection; ``read_s`` for each wait on the server: the
head, then each piece of the body. A long answer has no limit as a whole (the gateway's
watch holds a request to the neuron's own pace).

**Bodies** are read as they come. A reader slower than the neuron (a client reading a
stream slowly) stops the socket's reading at :data:`BUFFER_BYTES` held, until it catches
up, so a slow reader holds at most that much here.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import deque
from collections.abc import Coroutine
from typing import cast
from urllib.parse import urlsplit

import httptools

#: The heads this client keeps ready, one per path asked (``/api/chat``, ``/api/ps``, ...),
#: at most this many.
MAX_PATHS = 16

#: Idle connections kept per neuron: as many as the requests it answered at once, up to this.
MAX_IDLE = 32

#: How long an idle connection is kept (aiohttp's own figure here, longer than a probe
#: interval, so that probes reuse it rather than paying a new handshake).
KEEPALIVE_S = 120.0

#: Body bytes held for a slow reader before the socket stops being read.
BUFFER_BYTES = 256 * 1024

CLOSED = "the server closed the connection"
READ_TIMEOUT = "ReadTimeout: no data in time"


class NoAnswer(Exception):
    """Nothing answered: no connection, or it closed (or timed out) before the status line.
    ``stale``: a kept-alive connection that the server had closed, found closed before any
    byte came back: worth one more try on a new connection."""

    def __init__(self, why: str, *, stale: bool = False) -> None:
        super().__init__(why)
        self.stale = stale


class CutOff(Exception):
    """The answer broke off while its body was being read."""


class _Connection(asyncio.Protocol):
    """One TCP connection to a neuron, asked one request at a time: its head is awaited with
    :meth:`ask`, then its body read with :meth:`piece`. Each wait on the server ends after
    ``read_s`` of silence: the connection is closed, and the wait raises."""

    def __init__(self, read_s: float | None) -> None:
        self.open = False
        self.idle_since = 0.0
        self._read_s = read_s
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None  # the head, then each piece
        self._wait_began = 0.0  # when the wait under way began, on the loop's clock
        self._timer: asyncio.TimerHandle | None = None  # checks the waits: see _wait
        self._reset()

    def _reset(self) -> None:
        self.heard = False  # any byte of this answer
        self.headers_done = False
        self.complete = False  # the whole answer came, and the connection may carry another
        self.reason_parts: list[bytes] = []
        self.content_type = b""
        self._delimited = False  # by a Content-Length or chunks, not by the end of the stream
        self._pieces: deque[bytes] = deque()
        self._held = 0
        self._paused = False
        self._ended: str | None = None  # set when no more will come: "" whole, else why cut

    @property
    def status(self) -> int:
        return self._parser.get_status_code()

    def ask(self, request: bytes) -> asyncio.Future[None]:
        """Send ``request``; the future settles when the answer's head is in with the first
        piece of its body, or its end (or raises :class:`NoAnswer`)."""
        assert self._transport is not None
        if self._paused:  # the last answer came whole while a slow reader held it back
            self._transport.resume_reading()
        self._reset()
        waiter = self._wait()
        self._transport.write(request)
        return waiter

    async def piece(self) -> bytes | None:
        """What has come of the body since the last call (waiting for it if nothing has);
        ``None`` at its end; :class:`CutOff` when it broke off."""
        if not self._pieces and self._ended is None:
            await self._wait()
        if self._pieces:
            data = self._pieces.popleft() if len(self._pieces) == 1 else b"".join(self._pieces)
            self._pieces.clear()
            self._held = 0
            if self._paused and self._transport is not None and self.open:
                self._paused = False
                self._transport.resume_reading()
            return data
        if self._ended:
            raise CutOff(self._ended)
        return None

    def close(self) -> None:
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()

    def _wait(self) -> asyncio.Future[None]:
        """A wait on the server, within ``read_s``. One timer checks the waits rather than one
        a wait (a stream waits once a piece, and a timer costs more than the rest of a
        piece's reading): set when none is, for when this wait would time out; going off
        early, for a wait begun since, it is set again for that one."""
        self._waiter = self._loop.create_future()
        if self._read_s is not None:
            self._wait_began = self._loop.time()
            if self._timer is None:
                self._timer = self._loop.call_at(self._wait_began + self._read_s, self._check)
        return self._waiter

    def _check(self) -> None:
        self._timer = None
        if self._waiter is None or self._read_s is None:  # not waiting: the next wait sets it
            return
        due = self._wait_began + self._read_s
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        self._end(READ_TIMEOUT, lost=False)
        self.close()

    def _wake(self, error: BaseException | None = None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

    def _end(self, why: str, *, lost: bool) -> None:
        """No more of this answer will come: whole (``why`` empty) or cut off (``why``);
        ``lost``: because the connection closed."""
        if self._ended is None:
            self._ended = why
        if not self.headers_done:
            self._wake(NoAnswer(why or CLOSED, stale=lost and not self.heard))
        else:
            self._wake()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.complete or self._ended is not None:
            return
        why = CLOSED if exc is None else f"{type(exc).__name__}: {exc}"
        if self.headers_done and not self._delimited:
            why = ""  # a body without a length ends with its connection: it is whole
        self._end(why, lost=True)

    def data_received(self, data: bytes) -> None:
        if self._ended is not None or self.complete:  # the server spoke out of turn
            self.close()
            return
        self.heard = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.close()
            self._end(f"not an HTTP answer ({exc})", lost=False)

    # httptools' callbacks

    def on_status(self, status: bytes) -> None:
        self.reason_parts.append(status)  # in pieces, when it came in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        if self.status >= 200:  # not an interim answer (100 Continue): the real one follows
            self.headers_done = True
            # No wake yet: the wait for the head goes on for the body's first piece (or its
            # end), which a stream's reader wants next anyway: one wake rather than two.
            self._wait_began = self._loop.time()

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        self._held += len(body)
        if self._held > BUFFER_BYTES and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:  # an interim answer: the real one follows
            self.reason_parts = []
            self._delimited = False
            return
        self.complete = self._parser.should_keep_alive()
        self._end("", lost=False)


class LeanAnswer:
    """An answer whose head has come; its body is read with :meth:`piece` or :meth:`read`,
    and :meth:`aclose` gives its connection back (or closes it, when the body was not read
    to its end)."""

    def __init__(self, client: LeanClient, connection: _Connection) -> None:
        self._client = client
        self._connection: _Connection | None = connection
        self.status = connection.status
        self.reason = b"".join(connection.reason_parts).decode("latin-1")
        self.content_type = connection.content_type.decode("latin-1")

    def piece(self) -> Coroutine[None, None, bytes | None]:
        """What has come of the body since the last call, waiting for it if nothing has;
        ``None`` at its end; :class:`CutOff` when it broke off. (The connection's own
        coroutine, handed over: a stream waits here once a piece.)"""
        connection = self._connection
        assert connection is not None, "the answer was closed"
        return connection.piece()

    async def read(self) -> bytes:
        """The whole body; :class:`CutOff` when it breaks off."""
        connection = self._connection
        assert connection is not None, "the answer was closed"
        parts = []
        while (data := await connection.piece()) is not None:
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client.give_back(connection)


class LeanClient:
    """One neuron's requests, on kept-alive connections of its own."""

    def __init__(self, *, connect_s: float | None, read_s: float | None) -> None:
        self.closed = False
        self.read_s = read_s
        self._connect_s = connect_s
        self._idle: list[_Connection] = []  # the newest last: bounded by MAX_IDLE
        self._heads: dict[tuple[str, str], tuple[str, int, bytes]] = {}  # bounded: MAX_PATHS

    async def open(self, method: str, url: str, body: bytes | None) -> LeanAnswer:
        """Send ``method url`` (with ``body``, JSON); the answer once its head has come, with
        the first piece of its body. :class:`NoAnswer` when none came."""
        host, port, head = self._head(method, url)
        if method == "GET":
            request = head
        else:
            body = body or b""
            request = b"%s%d\r\n\r\n%s" % (head, len(body), body)
        connection = self._reused()
        if connection is not None:
            try:
                return await self._ask(connection, request)
            except NoAnswer as exc:
                if not exc.stale:
                    raise
        return await self._ask(await self._connect(host, port), request)

    def give_back(self, connection: _Connection) -> None:
        """Keep ``connection`` for the next request if its answer was read whole and it is
        still open; close it otherwise."""
        if (
            connection.complete
            and connection.open
            and not self.closed
            and len(self._idle) < MAX_IDLE
        ):
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _reused(self) -> _Connection | None:
        """The newest idle connection still open, after closing those kept too long."""
        idle = self._idle
        too_old = time.monotonic() - KEEPALIVE_S
        while idle and idle[0].idle_since < too_old:  # the oldest first
            idle.pop(0).close()
        while idle:
            connection = idle.pop()
            if connection.open:
                return connection
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.read_s), host, port
                )
        except TimeoutError:
            raise NoAnswer(f"ConnectTimeout: no connection within {self._connect_s:g} s") from None
        except OSError as exc:
            raise NoAnswer(f"ConnectError: {exc}") from exc
        return connection

    async def _ask(self, connection: _Connection, request: bytes) -> LeanAnswer:
        try:
            await connection.ask(request)
        except BaseException:  # no answer, or cancelled: an answer may yet come on it
            connection.close()
            raise
        return LeanAnswer(self, connection)

    def _head(self, method: str, url: str) -> tuple[str, int, bytes]:
        """Where to connect for ``url``, and the head of its request (for a body, up to its
        ``Content-Length`` value)."""
        known = self._heads.get((method, url))
        if known is None:
            if len(self._heads) >= MAX_PATHS:
                self._heads.clear()
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            head += "Accept: application/json\r\nUser-Agent: ganglion\r\n"
            if method == "GET":
                head += "\r\n"
            else:
                head += "Content-Type: application/json\r\nContent-Length: "
            known = (parts.hostname or "", parts.port or 80, head.encode("ascii"))
            self._heads[(method, url)] = known
        return known


def lean_client(
    base_url: str, *, connect_s: float | None, read_s: float | None
) -> LeanClient | None:
    """:class:`LeanClient` for the neuron at ``base_url``, or ``None`` when its requests
    should go through aiohttp: not plain ``http://``, credentials in the URL, or a proxy set
    in the environment (aiohttp follows it; this does not)."""
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
    return LeanClient(connect_s=connect_s, read_s=read_s)
