"""A streamed answer, sent piece by piece straight to the server, stopped when the client
leaves.

Starlette's ``StreamingResponse`` does the same job with an anyio task group per answer: a
task for the stream and one listening for the client to leave, under cancel scopes. The
gateway streams every token of the fleet through here, so this one costs less: the stream
runs in the request's own task, and one plain task listens for ``http.disconnect``. When
the client leaves first, the listener cancels the stream's task where it waits (for the
neuron's next chunk, say), the pieces' generator is closed, which closes the neuron's
stream, and the cancellation ends here. When the answer ends first, the listener is
cancelled.

The listener starts once the first piece is out, so that the first byte does not wait for
it: the gateway's first piece is ready when its answer starts (the neuron's first chunk is
in hand by then), so nothing is waited on unwatched. A client gone before that is heard at
once then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class Streamed(Response):
    """An answer streamed from ``pieces`` (text, encoded as UTF-8, or bytes), status 200."""

    def __init__(
        self,
        pieces: AsyncIterator[str] | AsyncIterator[bytes],
        *,
        media_type: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """``headers``: raw pairs, as the server sends them (``front.raw_answered``)."""
        self.pieces = pieces
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.raw_headers = [(b"content-type", _content_type(media_type)), *headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        left = False
        listener: asyncio.Task[None] | None = None

        def gone(listener: asyncio.Task[None]) -> None:
            nonlocal left
            if not listener.cancelled():
                left = True
                task.cancel()

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for piece in self.pieces:
                body = piece.encode() if isinstance(piece, str) else piece
                await send({"type": "http.response.body", "body": body, "more_body": True})
                if listener is None:  # the first piece is out
                    listener = asyncio.get_running_loop().create_task(_disconnect(receive))
                    listener.add_done_callback(gone)
            if listener is not None:
                listener.remove_done_callback(gone)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left or task.uncancel() > 0:
                raise
        finally:
            if listener is not None:
                listener.remove_done_callback(gone)
                listener.cancel()
            closer = getattr(self.pieces, "aclose", None)
            if closer is not None:  # stopped early (the client left): close the neuron's stream
                await closer()


def _content_type(media_type: str) -> bytes:
    """The ``Content-Type`` of ``media_type``, as starlette writes it: a text type with its
    character set."""
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")


async def _disconnect(receive: Receive) -> None:
    """Return once the client has gone (or the answer is complete: then the server says so)."""
    while (await receive())["type"] != "http.disconnect":
        pass
