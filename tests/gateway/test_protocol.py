"""The server's protocol: a response's head goes out with the first bytes of its body, in one
write; a head that nothing follows at once still goes out when the loop comes round; a close
sends a head still held first. (Every test that runs ``ganglion serve``, the official
clients' among them, goes through it too.)"""

from __future__ import annotations

import asyncio

from ganglion.gateway.protocol import HeadHeld

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Transport:
    """What reached the socket, one entry a write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> object:
        return f"info:{name}"


async def test_a_head_goes_out_with_the_body_in_one_write() -> None:
    transport = Transport()
    held = HeadHeld(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(HEAD)
    assert transport.writes == []
    held.write(b"{}")
    held.write(b"more")
    assert transport.writes == [HEAD + b"{}", b"more"]
    await asyncio.sleep(0)  # the loop comes round: nothing is left to send
    assert transport.writes == [HEAD + b"{}", b"more"]


async def test_a_head_alone_goes_out_when_the_loop_comes_round() -> None:
    transport = Transport()
    held = HeadHeld(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(HEAD)
    await asyncio.sleep(0)
    assert transport.writes == [HEAD]
    held.write(b"{}")
    assert transport.writes == [HEAD, b"{}"]


async def test_a_close_sends_the_head_first_and_the_rest_is_the_transports() -> None:
    transport = Transport()
    held = HeadHeld(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(HEAD)
    held.close()
    assert transport.writes == [HEAD]
    assert transport.closed
    assert held.get_extra_info("peername") == "info:peername"
    await asyncio.sleep(0)
    assert transport.writes == [HEAD]  # sent once
