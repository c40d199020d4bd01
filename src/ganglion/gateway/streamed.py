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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class Streamed(Response):
    """An answer streamed from ``pieces`` (text, encoded as UTF-8, or bytes), status 200."""

    def __init__(
        self,
        pieces: AsyncIterator[str] | AsyncIterator[bytes],
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.pieces = pieces
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        left = False

        def gone(listener: asyncio.Task[None]) -> None:
            nonlocal left
            if not listener.cancelled():
                left = True
                task.cancel()

        listener = asyncio.get_running_loop().create_task(_disconnect(receive))
        listener.add_done_callback(gone)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for piece in self.pieces:
                body = piece.encode() if isinstance(piece, str) else piece
                await send({"type": "http.response.body", "body": body, "more_body": True})
            listener.remove_done_callback(gone)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left or task.uncancel() > 0:
                raise
        finally:
            listener.remove_done_callback(gone)
            listener.cancel()
            closer = getattr(self.pieces, "aclose", None)
            if closer is not None:  # stopped early (the client left): close the neuron's stream
                await closer()


async def _disconnect(receive: Receive) -> None:
    """Return once the client has gone (or the answer is complete: then the server says so)."""
    while (await receive())["type"] != "http.disconnect":
        pass
