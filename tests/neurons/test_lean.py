"""The lean client against a raw TCP server on loopback that says exactly the bytes a test
gives it: bodies by length, in chunks or up to the close, read whole or piece by piece;
connections kept, pooled, expired, closed, stale, cut; answers that are not HTTP, or never
come; a reader slower than the server. (``test_probe_client.py`` holds the errors to the
same messages as through httpx, through :class:`NeuronHTTP`.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from ganglion.neurons import lean as lean_module
from ganglion.neurons.lean import MAX_IDLE, MAX_PATHS, CutOff, LeanClient, NoAnswer, lean_client

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
PS = OK + b'{"models":[]}'


class Close(bytes):
    """Bytes to answer with, after which the server closes the connection."""


#: Given the number of the connection (from 0) and of the request on it, the bytes to answer
#: with; ``None``: close the connection without a word; ``b""``: say nothing, keep it open.
Script = Callable[[int, int], bytes | None]


class Server:
    """A TCP server that answers each request (head, and body by its length) by its script,
    and keeps what it was asked."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.closed_by_client = 0
        self.asked: list[bytes] = []  # each request's line and body
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
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"Content-Length: (\d+)", head)
                    body = await reader.readexactly(int(length[1])) if length else b""
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                self.asked.append(head.split(b"\r\n")[0] + b" " + body)
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


def client(read_s: float | None = 5.0) -> LeanClient:
    return LeanClient(connect_s=5.0, read_s=read_s)


@dataclass
class Got:
    status: int
    reason: str
    content_type: str
    body: bytes


async def get(lean: LeanClient, url: str) -> Got:
    """``GET url``, read whole."""
    answer = await lean.open("GET", url, None)
    try:
        return Got(answer.status, answer.reason, answer.content_type, await answer.read())
    finally:
        await answer.aclose()


async def closed_by_client(server: Server, count: int) -> int:
    for _ in range(40):
        if server.closed_by_client >= count:
            break
        await asyncio.sleep(0.05)
    return server.closed_by_client


async def test_a_kept_alive_connection_carries_every_get() -> None:
    async with serving(lambda conn, asked: PS) as (server, url):
        lean = client()
        for _ in range(3):
            got = await get(lean, f"{url}/api/ps")
            assert (got.status, got.reason, got.body) == (200, "OK", b'{"models":[]}')
            assert got.content_type == "application/json"
        await lean.aclose()
    assert server.connections == 1


async def test_a_post_sends_its_body_and_shares_the_connection_with_gets() -> None:
    async with serving(lambda conn, asked: PS) as (server, url):
        lean = client()
        answer = await lean.open("POST", f"{url}/api/chat", b'{"model":"m"}')
        assert (answer.status, await answer.read()) == (200, b'{"models":[]}')
        await answer.aclose()
        await get(lean, f"{url}/api/ps")
        answer = await lean.open("POST", f"{url}/api/chat", b"")
        await answer.aclose()
        await lean.aclose()
    assert server.connections == 1
    assert server.asked == [
        b'POST /api/chat HTTP/1.1 {"model":"m"}',
        b"GET /api/ps HTTP/1.1 ",
        b"POST /api/chat HTTP/1.1 ",
    ]


async def _hang_up_when_the_client_does(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.read()  # until the client closes
    writer.close()
    await writer.wait_closed()


async def test_a_streamed_body_comes_piece_by_piece_as_the_server_sends_it() -> None:
    released, finished = asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
        await released.wait()
        writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
        await writer.drain()
        await _hang_up_when_the_client_does(reader, writer)
        finished.set()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    lean = client()
    answer = await lean.open("POST", f"http://127.0.0.1:{port}/api/chat", b"{}")
    assert await answer.piece() == b"first\n"  # before the rest is even sent
    released.set()
    assert await answer.piece() == b"second\n"
    assert await answer.piece() is None
    await answer.aclose()
    await lean.aclose()
    await finished.wait()
    listening.close()


async def test_a_head_sent_alone_is_handed_over_with_the_first_piece() -> None:
    """The reader of a stream wants its first piece next: the head alone wakes no one."""
    head_sent, released, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        head_sent.set()
        await released.wait()
        writer.write(b"6\r\nfirst\n\r\n0\r\n\r\n")
        await _hang_up_when_the_client_does(reader, writer)
        finished.set()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    lean = client()
    opening = asyncio.create_task(lean.open("POST", f"http://127.0.0.1:{port}/api/chat", b"{}"))
    await head_sent.wait()
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert not opening.done()
    released.set()
    answer = await opening
    assert answer.status == 200
    assert await answer.read() == b"first\n"
    await answer.aclose()
    await lean.aclose()
    await finished.wait()
    listening.close()


async def test_answers_at_once_take_a_connection_each_and_all_are_kept() -> None:
    async with serving(lambda conn, asked: PS) as (server, url):
        lean = client()
        answers = await asyncio.gather(*(lean.open("GET", f"{url}/x", None) for _ in range(3)))
        for answer in answers:
            await answer.read()
            await answer.aclose()
        await asyncio.gather(*(get(lean, f"{url}/x") for _ in range(3)))
        await lean.aclose()
    assert server.connections == 3


async def test_idle_connections_are_bounded() -> None:
    async with serving(lambda conn, asked: PS) as (server, url):
        lean = client()
        opened = [lean.open("GET", f"{url}/x", None) for _ in range(MAX_IDLE + 3)]
        answers = await asyncio.gather(*opened)
        for answer in answers:
            await answer.read()
            await answer.aclose()
        assert await closed_by_client(server, 3) == 3  # the rest are kept for what comes next
        await lean.aclose()
        assert await closed_by_client(server, MAX_IDLE + 3) == MAX_IDLE + 3


async def test_a_connection_idle_too_long_is_closed_when_the_neuron_is_next_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(lambda conn, asked: PS) as (server, url):
        lean = client()
        await get(lean, f"{url}/x")
        monkeypatch.setattr(lean_module, "KEEPALIVE_S", -1.0)
        await get(lean, f"{url}/x")
        assert await closed_by_client(server, 1) == 1
        await lean.aclose()
    assert server.connections == 2


async def test_an_answer_closed_before_its_end_closes_its_connection() -> None:
    async with serving(lambda conn, asked: OK + b'{"mod' if conn == 0 else PS) as (server, url):
        lean = client()
        answer = await lean.open("GET", f"{url}/x", None)
        await answer.aclose()  # the rest would be read as the next answer
        await get(lean, f"{url}/x")
        await lean.aclose()
    assert server.connections == 2


async def test_a_chunked_body_is_read_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
    chunked += b'{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    async with serving(lambda conn, asked: chunked) as (server, url):
        lean = client()
        assert (await get(lean, f"{url}/x")).body == b'{"a":1}'
        assert (await get(lean, f"{url}/x")).body == b'{"a":1}'
        await lean.aclose()
    assert server.connections == 1


async def test_a_body_without_length_ends_with_the_connection() -> None:
    until_close = Close(b"HTTP/1.0 200 OK\r\n\r\n[1, 2]")
    async with serving(lambda conn, asked: until_close) as (server, url):
        lean = client()
        assert (await get(lean, f"{url}/x")).body == b"[1, 2]"
        await get(lean, f"{url}/x")
        await lean.aclose()
    assert server.connections == 2  # HTTP/1.0 without keep-alive: a connection each


async def test_a_connection_the_server_says_it_closes_is_not_kept() -> None:
    closing = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b'{"models":[]}'
    async with serving(lambda conn, asked: closing) as (server, url):
        lean = client()
        await get(lean, f"{url}/api/ps")
        await get(lean, f"{url}/api/ps")
        await lean.aclose()
    assert server.connections == 2


async def test_an_interim_answer_is_passed_over() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + PS
    async with serving(lambda conn, asked: interim) as (_, url):
        lean = client()
        got = await get(lean, f"{url}/api/ps")
        assert (got.status, got.reason, got.body) == (200, "OK", b'{"models":[]}')
        await lean.aclose()


async def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one() -> None:
    """The server closed the kept-alive connection as the second request went out on it:
    it never read it, so it goes once more, a POST too."""
    async with serving(lambda conn, asked: PS if asked == 0 else None) as (server, url):
        lean = client()
        await get(lean, f"{url}/api/ps")
        answer = await lean.open("POST", f"{url}/api/chat", b"{}")
        assert answer.status == 200
        await answer.aclose()
        await lean.aclose()
    assert server.connections == 2


async def test_a_kept_alive_connection_that_began_to_answer_is_not_retried() -> None:
    """The server took the request (it began its answer), so the connection was not stale."""

    def script(conn: int, asked: int) -> bytes:
        return PS if asked == 0 else Close(b"HTTP/1.1 200")

    async with serving(script) as (server, url):
        lean = client()
        await get(lean, f"{url}/api/ps")
        with pytest.raises(NoAnswer, match="closed the connection"):
            await get(lean, f"{url}/api/ps")
        await lean.aclose()
    assert server.connections == 1


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async with serving(lambda conn, asked: None) as (server, url):
        lean = client()
        with pytest.raises(NoAnswer, match="closed the connection"):
            await get(lean, f"{url}/api/ps")
        await lean.aclose()
    assert server.connections == 1


async def test_headers_then_a_cut_is_an_answer_cut_off_after_what_came() -> None:
    async with serving(lambda conn, asked: Close(OK + b'{"mod')) as (_, url):
        lean = client()
        answer = await lean.open("GET", f"{url}/api/ps", None)  # 5 bytes of 13, then the close
        assert await answer.piece() == b'{"mod'
        with pytest.raises(CutOff, match="the server closed the connection"):
            await answer.piece()
        await answer.aclose()
        await lean.aclose()


async def test_an_answer_that_is_not_http_is_no_answer() -> None:
    async with serving(lambda conn, asked: b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as (_, url):
        lean = client()
        with pytest.raises(NoAnswer, match="not an HTTP answer"):
            await get(lean, f"{url}/api/ps")
        await lean.aclose()


async def test_silence_past_the_read_timeout_is_no_answer_and_the_connection_is_dropped() -> None:
    async with serving(lambda conn, asked: b"" if conn == 0 else PS) as (server, url):
        lean = client(read_s=0.2)
        with pytest.raises(NoAnswer, match="ReadTimeout"):
            await get(lean, f"{url}/api/ps")
        assert (await get(lean, f"{url}/api/ps")).status == 200  # on a new connection
        await lean.aclose()
    assert server.connections == 2


async def test_silence_midway_past_the_read_timeout_cuts_the_body_off() -> None:
    partial = OK + b'{"mo'
    async with serving(lambda conn, asked: partial if conn == 0 else PS) as (server, url):
        lean = client(read_s=0.2)
        answer = await lean.open("GET", f"{url}/api/ps", None)
        with pytest.raises(CutOff, match="ReadTimeout"):
            await answer.read()
        await answer.aclose()
        assert (await get(lean, f"{url}/api/ps")).status == 200  # on a new connection
        await lean.aclose()
    assert server.connections == 2


async def test_the_read_timeout_holds_each_wait_not_the_whole_body() -> None:
    """Pieces that each come within the read timeout are read, however long they take in
    all; silence after them still times out (one timer checks every wait)."""
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            await asyncio.sleep(0.1)
            writer.write(b"2\r\nx\n\r\n")
        await reader.read()  # then silence, until the client closes
        writer.close()
        await writer.wait_closed()
        finished.set()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    lean = client(read_s=0.3)
    answer = await lean.open("POST", f"http://127.0.0.1:{port}/api/chat", b"{}")
    read: list[bytes] = []

    async def read_all() -> None:
        while (piece := await answer.piece()) is not None:
            read.append(piece)

    with pytest.raises(CutOff, match="ReadTimeout"):
        await read_all()
    assert b"".join(read) == b"x\n" * 5  # half a second of pieces, past the 0.3 s timeout
    await answer.aclose()
    await lean.aclose()
    await finished.wait()
    listening.close()


async def test_a_request_cancelled_midway_leaves_no_connection_to_reuse() -> None:
    """A probe's own timeout cancels it; its answer may still come, so its connection must
    not carry the next request."""
    async with serving(lambda conn, asked: b"" if conn == 0 else PS) as (server, url):
        lean = client()
        task = asyncio.create_task(get(lean, f"{url}/api/ps"))
        while server.connections == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await closed_by_client(server, 1) == 1  # closed at this end, not left open
        assert (await get(lean, f"{url}/api/ps")).status == 200
        await lean.aclose()
    assert server.connections == 2


async def test_a_slow_reader_stops_the_socket_being_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server sends far more than the buffer holds; this end stops reading until the
    reader catches up, and then the body comes whole."""
    monkeypatch.setattr(lean_module, "BUFFER_BYTES", 1024)
    big = b"x" * 4_000_000
    answer_bytes = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    async with serving(lambda conn, asked: answer_bytes) as (_, url):
        lean = client()
        answer = await lean.open("GET", f"{url}/big", None)
        await asyncio.sleep(0.3)  # the server writes as fast as it can meanwhile
        held = sum(len(piece) for piece in answer._connection._pieces)  # type: ignore[union-attr]
        assert held < len(big) // 2
        assert await answer.read() == big
        await answer.aclose()
        await lean.aclose()


async def test_a_connection_held_back_by_a_reader_that_left_carries_the_next_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole answer came in one go, past the buffer (so reading stopped), and its reader
    closed it unread: the connection goes back whole, and reads the next answer."""
    monkeypatch.setattr(lean_module, "BUFFER_BYTES", 4)
    async with serving(lambda conn, asked: PS) as (server, url):
        lean = client(read_s=2.0)
        answer = await lean.open("GET", f"{url}/api/ps", None)
        await answer.aclose()
        assert (await get(lean, f"{url}/api/ps")).body == b'{"models":[]}'
        await lean.aclose()
    assert server.connections == 1


async def test_nothing_listening_is_no_answer() -> None:
    async with serving(lambda conn, asked: PS) as (_, url):
        pass  # closed: nothing listens there now
    with pytest.raises(NoAnswer, match="ConnectError"):
        await get(client(), f"{url}/api/ps")


async def test_the_heads_it_keeps_are_bounded() -> None:
    async with serving(lambda conn, asked: PS) as (_, url):
        lean = client()
        for number in range(MAX_PATHS + 5):
            await get(lean, f"{url}/path{number}")
        assert len(lean._heads) <= MAX_PATHS
        await lean.aclose()


def test_only_plain_http_without_a_proxy_goes_the_lean_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)

    def goes_lean(url: str) -> bool:
        return lean_client(url, connect_s=1.0, read_s=1.0) is not None

    assert goes_lean("http://gpu-box:11434")
    assert goes_lean("http://[::1]:11434/ollama")
    assert not goes_lean("https://gpu-box:11434")
    assert not goes_lean("http://user:secret@gpu-box:11434")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert not goes_lean("http://gpu-box:11434")
