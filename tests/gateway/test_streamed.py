"""The streamed answer: every piece sent, then the end; a client that leaves stops the stream
where it waits and closes it; a cancellation from outside (the server stopping) still ends
the task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from ganglion.gateway.streamed import Streamed

SCOPE = {"type": "http", "method": "POST", "path": "/api/chat", "headers": []}


class Server:
    """The server's side of one answer: what the app sent, and a client that can leave."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.leave = asyncio.Event()

    async def receive(self) -> Message:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def test_every_piece_is_sent_then_the_end() -> None:
    async def pieces() -> AsyncIterator[str]:
        yield "one\n"
        yield "two\n"

    server = Server()
    before = len(asyncio.all_tasks())
    response = Streamed(pieces(), media_type="application/x-ndjson", headers=[(b"x-a", b"b")])
    await response(SCOPE, server.receive, server.send)
    start = server.sent[0]
    assert start["status"] == 200
    assert (b"x-a", b"b") in start["headers"]
    assert (b"content-type", b"application/x-ndjson") in start["headers"]
    assert server.bodies == [b"one\n", b"two\n", b""]
    assert server.sent[-1]["more_body"] is False
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before  # the disconnect listener is gone


async def test_a_client_that_leaves_stops_the_stream_where_it_waits() -> None:
    closed = asyncio.Event()
    never = asyncio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        try:
            yield b"first\n"
            await never.wait()  # a neuron that has not sent its next chunk yet
            yield b"never sent\n"
        finally:
            closed.set()

    server = Server()
    answer = asyncio.create_task(
        Streamed(pieces(), media_type="text/event-stream")(SCOPE, server.receive, server.send)
    )
    while not server.bodies:
        await asyncio.sleep(0)
    server.leave.set()
    await asyncio.wait_for(answer, 5)  # ends, without raising
    assert closed.is_set()
    assert server.bodies == [b"first\n"]


async def test_a_cancellation_from_outside_still_cancels() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.Event().wait()
        yield b"never sent\n"

    server = Server()
    answer = asyncio.create_task(
        Streamed(pieces(), media_type="text/event-stream")(SCOPE, server.receive, server.send)
    )
    while not server.bodies:
        await asyncio.sleep(0)
    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer
