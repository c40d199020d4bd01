"""A TCP relay in the root namespace, so a test host can reach a loopback-only server.

The test PostgreSQL listens on 127.0.0.1, which no test host can reach; the relay listens on
the root namespace's address in the test network and passes bytes both ways to it. The
gateway on its host then uses the real PostgreSQL as if it were across the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

BUFFER = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.contextmanager
def relay(listen: str, target: tuple[str, int]) -> Iterator[int]:
    """Relay connections to ``listen`` (an address, any free port) to ``target``; yields the
    port it listens on."""
    loop = asyncio.new_event_loop()
    ports: list[int] = []
    started = threading.Event()

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    async def serve() -> None:
        server = await asyncio.start_server(connect, listen, 0)
        ports.append(server.sockets[0].getsockname()[1])
        started.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError(f"the relay on {listen} did not start")
    try:
        yield ports[0]
    finally:
        loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        thread.join(10)
        loop.close()
