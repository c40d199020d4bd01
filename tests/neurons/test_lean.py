"""The probes' lean GETs against a raw TCP server on loopback that says exactly the bytes a
test gives it: bodies by length, in chunks or up to the close; connections kept, closed,
stale, cut; answers that are not HTTP, or never come. (``test_probe_client.py`` holds the
errors to the same messages as through httpx, through :class:`NeuronHTTP`.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from ganglion.neurons.lean import MAX_PATHS, LeanGets, NoAnswer, lean_gets

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
PS = OK + b'{"models":[]}'


class Close(bytes):
    """Bytes to answer with, after which the server closes the connection."""


#: Given the number of the connection (from 0) and of the request on it, the bytes to answer
#: with; ``None``: close the connection without a word; ``b""``: say nothing, keep it open.
Script = Callable[[int, int], bytes | None]


class Server:
    """A TCP server that answers each request's head by its script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.closed_by_client = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: list[asyncio.Task[None]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, self.connections = self.connections, self.connections + 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        asked = 0
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                answer = self.script(number, asked)
                asked += 1
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if isinstance(answer, Close):
                    return
        finally:
            writer.close()


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[tuple[Server, str]]:
    server = Server(script)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        listening.close()
        for writer in server.writers:  # its handlers end on their own, not cancelled
            writer.close()
        await asyncio.gather(*server.handlers, return_exceptions=True)


def gets(read_s: float | None = 5.0) -> LeanGets:
    return LeanGets(connect_s=5.0, read_s=read_s)


async def test_a_kept_alive_connection_carries_every_get() -> None:
    async with serving(lambda conn, asked: PS) as (server, url):
        client = gets()
        for _ in range(3):
            reply = await client.get(f"{url}/api/ps")
            assert (reply.status, reply.reason, reply.body) == (200, "OK", b'{"models":[]}')
            assert reply.content_type == "application/json"
        await client.aclose()
    assert server.connections == 1


async def test_a_chunked_body_is_read_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
    chunked += b'{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    async with serving(lambda conn, asked: chunked) as (server, url):
        client = gets()
        assert (await client.get(f"{url}/x")).body == b'{"a":1}'
        assert (await client.get(f"{url}/x")).body == b'{"a":1}'
        await client.aclose()
    assert server.connections == 1


async def test_a_body_without_length_ends_with_the_connection() -> None:
    until_close = Close(b"HTTP/1.0 200 OK\r\n\r\n[1, 2]")
    async with serving(lambda conn, asked: until_close) as (server, url):
        client = gets()
        reply = await client.get(f"{url}/x")
        assert (reply.body, reply.cut) == (b"[1, 2]", None)
        await client.get(f"{url}/x")
        await client.aclose()
    assert server.connections == 2  # HTTP/1.0 without keep-alive: a connection each


async def test_a_connection_the_server_says_it_closes_is_not_kept() -> None:
    closing = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b'{"models":[]}'
    async with serving(lambda conn, asked: closing) as (server, url):
        client = gets()
        await client.get(f"{url}/api/ps")
        await client.get(f"{url}/api/ps")
        await client.aclose()
    assert server.connections == 2


async def test_an_interim_answer_is_passed_over() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + PS
    async with serving(lambda conn, asked: interim) as (_, url):
        client = gets()
        assert (await client.get(f"{url}/api/ps")).status == 200
        await client.aclose()


async def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one() -> None:
    """The server closed the kept-alive connection as the second GET went out on it."""
    async with serving(lambda conn, asked: PS if asked == 0 else None) as (server, url):
        client = gets()
        await client.get(f"{url}/api/ps")
        assert (await client.get(f"{url}/api/ps")).status == 200
        await client.aclose()
    assert server.connections == 2


async def test_a_kept_alive_connection_that_began_to_answer_is_not_retried() -> None:
    """The server took the GET (it began its answer), so the connection was not stale."""

    def script(conn: int, asked: int) -> bytes:
        return PS if asked == 0 else Close(b"HTTP/1.1 200")

    async with serving(script) as (server, url):
        client = gets()
        await client.get(f"{url}/api/ps")
        with pytest.raises(NoAnswer, match="closed the connection"):
            await client.get(f"{url}/api/ps")
        await client.aclose()
    assert server.connections == 1


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async with serving(lambda conn, asked: None) as (server, url):
        client = gets()
        with pytest.raises(NoAnswer, match="closed the connection"):
            await client.get(f"{url}/api/ps")
        await client.aclose()
    assert server.connections == 1


async def test_headers_then_a_cut_is_a_reply_cut_off() -> None:
    async with serving(lambda conn, asked: Close(OK + b'{"mod')) as (_, url):
        client = gets()
        reply = await client.get(f"{url}/api/ps")  # 5 bytes of 13, then the close
        await client.aclose()
    assert reply.cut == "the server closed the connection"
    assert reply.body == b'{"mod'


async def test_an_answer_that_is_not_http_is_no_answer() -> None:
    async with serving(lambda conn, asked: b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as (_, url):
        client = gets()
        with pytest.raises(NoAnswer, match="not an HTTP answer"):
            await client.get(f"{url}/api/ps")
        await client.aclose()


async def test_silence_past_the_read_timeout_is_no_answer_and_the_connection_is_dropped() -> None:
    async with serving(lambda conn, asked: b"" if conn == 0 else PS) as (server, url):
        client = gets(read_s=0.2)
        with pytest.raises(NoAnswer, match="ReadTimeout"):
            await client.get(f"{url}/api/ps")
        assert (await client.get(f"{url}/api/ps")).status == 200  # on a new connection
        await client.aclose()
    assert server.connections == 2


async def test_a_get_cancelled_midway_leaves_no_connection_to_reuse() -> None:
    """A probe's own timeout cancels it; its answer may still come, so its connection must
    not carry the next GET."""
    async with serving(lambda conn, asked: b"" if conn == 0 else PS) as (server, url):
        client = gets()
        task = asyncio.create_task(client.get(f"{url}/api/ps"))
        while server.connections == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(20):  # closed at this end, not left open
            if server.closed_by_client == 1:
                break
            await asyncio.sleep(0.05)
        assert server.closed_by_client == 1
        assert (await client.get(f"{url}/api/ps")).status == 200
        await client.aclose()
    assert server.connections == 2


async def test_at_most_one_idle_connection_is_kept() -> None:
    async with serving(lambda conn, asked: PS) as (server, url):
        client = gets()
        await asyncio.gather(*(client.get(f"{url}/api/ps") for _ in range(3)))
        for _ in range(20):  # the two extra ones are closed at this end
            if server.closed_by_client == 2:
                break
            await asyncio.sleep(0.05)
        assert (server.connections, server.closed_by_client) == (3, 2)
        await client.get(f"{url}/api/ps")
        assert server.connections == 3  # the one kept carries the next
        await client.aclose()


async def test_nothing_listening_is_no_answer() -> None:
    async with serving(lambda conn, asked: PS) as (_, url):
        pass  # closed: nothing listens there now
    with pytest.raises(NoAnswer, match="ConnectError"):
        await gets().get(f"{url}/api/ps")


async def test_the_requests_it_keeps_are_bounded() -> None:
    async with serving(lambda conn, asked: PS) as (_, url):
        client = gets()
        for number in range(MAX_PATHS + 5):
            await client.get(f"{url}/path{number}")
        assert len(client._requests) <= MAX_PATHS
        await client.aclose()


def test_only_plain_http_without_a_proxy_goes_the_lean_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)

    def lean(url: str) -> bool:
        return lean_gets(url, connect_s=1.0, read_s=1.0) is not None

    assert lean("http://gpu-box:11434")
    assert lean("http://[::1]:11434/ollama")
    assert not lean("https://gpu-box:11434")
    assert not lean("http://user:secret@gpu-box:11434")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert not lean("http://gpu-box:11434")
