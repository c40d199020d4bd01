"""The streamed answer: every piece sent, then the end; pieces made without a wait sent
together, and never held across a wait; a client that leaves stops the stream where it waits
and closes it; a cancellation from outside (the server stopping) still ends the task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from ganglion.gateway.streamed import HOLD_BYTES, Streamed

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
    async def pieces() -> AsyncIterator[bytes]:
        yield b"one\n"
        await asyncio.sleep(0)
        yield b"two\n"

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


async def test_pieces_ready_at_once_go_out_together_and_none_waits_behind_a_wait() -> None:
    """The first piece alone; then what is ready at once, in one body; the pieces made after
    a wait are not held while it lasts: what was made before it is sent first."""
    server = Server()
    gate = asyncio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        for text in (b"a", b"b", b"c"):  # a neuron's chunks that came in one read
            yield text
        await gate.wait()  # the neuron is silent until the test sees what was sent
        yield b"d"
        yield b"e"

    answer = asyncio.create_task(
        Streamed(pieces(), media_type="text/event-stream")(SCOPE, server.receive, server.send)
    )
    while len(server.bodies) < 2:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert server.bodies == [b"a", b"bc"]  # nothing waits behind the silence
    gate.set()
    await asyncio.wait_for(answer, 5)
    assert server.bodies == [b"a", b"bc", b"de", b""]
    assert server.sent[-1]["more_body"] is False


async def test_pieces_ready_at_once_are_held_to_a_bound() -> None:
    big = b"x" * (HOLD_BYTES // 2)

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(7):
            yield big

    server = Server()
    await Streamed(pieces(), media_type="application/x-ndjson")(SCOPE, server.receive, server.send)
    assert server.bodies == [big, big * 2, big * 2, big * 2, b""]


async def test_what_was_made_goes_out_before_a_failure() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"first\n"
        yield b"second\n"
        raise RuntimeError("broken")

    server = Server()
    with pytest.raises(RuntimeError, match="broken"):
        await Streamed(pieces(), media_type="text/event-stream")(SCOPE, server.receive, server.send)
    assert server.bodies == [b"first\n", b"second\n"]
