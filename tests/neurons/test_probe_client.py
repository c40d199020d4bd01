"""The neurons' shared aiohttp session against a real server on loopback: each answer and
each failure comes out as the same error, with the same message, as through httpx; and the
requests to a neuron go over one kept-alive connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ganglion.errors import NeuronError, NeuronStreamBroken, NeuronUnreachable
from ganglion.neurons.http import Connections, NeuronHTTP
from tests.neurons.conftest import Upstream, free_port, served

CLOSE_WAIT = "08"  # the state's code in /proc/net/tcp


class Answers(Upstream):
    """Answers by path."""

    async def answer(self, path: str, send: Any) -> None:
        if path == "/broken":  # headers, part of the body, then the connection is gone
            headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"mod', "more_body": True})
            raise RuntimeError("the server died")
        status, kind, body = {
            "/api/ps": (200, b"application/json", json.dumps({"models": []}).encode()),
            "/missing": (404, b"application/json", b'{"error": "no such thing"}'),
            "/teapot": (418, b"text/plain", b"  short\n and stout  "),
            "/page": (200, b"text/html", b"<html>hello</html>"),
            "/moved": (302, b"text/html", b"<a href='/api/ps'>moved</a>"),
        }[path]
        headers = [(b"content-type", kind)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Answers, str]]:
    app = Answers()
    async with served(app) as url:
        yield app, url


@pytest.fixture
async def clients(upstream: tuple[Answers, str]) -> AsyncIterator[tuple[NeuronHTTP, NeuronHTTP]]:
    """The same neuron through httpx, and through aiohttp on shared Connections."""
    _, url = upstream
    connections = Connections()
    plain = NeuronHTTP(url, transport=httpx.AsyncHTTPTransport())
    lean = NeuronHTTP(url, connections=connections)
    yield plain, lean
    await plain.aclose()
    await lean.aclose()
    await connections.aclose()


async def outcome(http: NeuronHTTP, path: str) -> tuple[str, str]:
    try:
        return "answer", json.dumps(await http.get_json(path))
    except NeuronError as error:
        return type(error).__name__, str(error)


@pytest.mark.parametrize("path", ["/api/ps", "/missing", "/teapot", "/page", "/moved"])
async def test_answers_and_refusals_read_as_they_do_through_httpx(
    clients: tuple[NeuronHTTP, NeuronHTTP], path: str
) -> None:
    plain, lean = clients
    assert await outcome(lean, path) == await outcome(plain, path)


async def test_a_body_cut_short_is_a_broken_stream(clients: tuple[NeuronHTTP, NeuronHTTP]) -> None:
    _, lean = clients
    with pytest.raises(NeuronStreamBroken, match="/broken broke off midway"):
        await lean.get_json("/broken")


async def test_nothing_listening_is_unreachable() -> None:
    connections = Connections()
    http = NeuronHTTP(f"http://127.0.0.1:{free_port()}", connections=connections)
    try:
        with pytest.raises(NeuronUnreachable, match=r"nothing answered at http://127\.0\.0\.1"):
            await http.get_json("/api/ps")
    finally:
        await http.aclose()
        await connections.aclose()


async def test_a_neurons_probes_share_one_kept_alive_connection(
    upstream: tuple[Answers, str], clients: tuple[NeuronHTTP, NeuronHTTP]
) -> None:
    app, _ = upstream
    _, lean = clients
    for _ in range(5):
        await lean.get_json("/api/ps")
    assert len(app.ports) == 5
    assert len(set(app.ports)) == 1


async def test_a_removed_neurons_probe_is_unreachable(
    clients: tuple[NeuronHTTP, NeuronHTTP],
) -> None:
    _, lean = clients
    await lean.aclose()
    with pytest.raises(NeuronUnreachable, match="removed from the fleet"):
        await lean.get_json("/api/ps")


def half_closed(port: int) -> int:
    """Connections to ``port`` that its server closed and this end has not (CLOSE_WAIT)."""
    count = 0
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == CLOSE_WAIT:
            count += 1
    return count


async def test_a_connection_the_neuron_closed_is_not_left_half_open() -> None:
    """A kept-alive connection that the neuron closes while idle is closed at this end too,
    without a next request: an idle neuron leaves nothing half-open (CLOSE_WAIT)."""
    async with served(Answers(), keep_alive_s=1) as url:
        port = int(url.rsplit(":", 1)[1])
        connections = Connections()
        http = NeuronHTTP(url, connections=connections)
        try:
            await http.get_json("/api/ps")
            await asyncio.sleep(2.5)  # past the server's keep-alive: it has closed its end
            assert half_closed(port) == 0
            await http.get_json("/api/ps")  # and the next request still answers
        finally:
            await http.aclose()
            await connections.aclose()
