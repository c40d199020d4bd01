"""The HTTP server's protocol: uvicorn's own (httptools), with an answer's head written
together with the first bytes of its body.

uvicorn writes a response's head as soon as the app starts the response, and each piece of
the body as it comes: a whole answer is two writes, and the first token of a stream waits on
the second. Each write is a system call, and on loopback the client's side of TCP too, and
the client is woken twice. So the head is held (:class:`HeadHeld`) until the next write,
which the gateway's answers make in the same step (the body is in hand when the response
starts), and sent with it; a head that nothing follows at once (an app that waits before its
first byte) goes out when the loop next comes round, a pass later.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: How a response's head begins, as uvicorn writes it: a write that begins so is held.
HEAD = b"HTTP/"


class HeadHeld:
    """A transport that holds a write that is a response's head until the next write (sent
    as one with it), or until the loop comes round; everything else is the transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(HEAD):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a head still held."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, over :class:`HeadHeld` (``uvicorn.Config(http=...)``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        held = HeadHeld(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, held))
