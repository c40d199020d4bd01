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

**Pieces that are ready together go out together.** A neuron's chunks often come several to
a read (a fast neuron, a busy gateway), and each of them makes a piece at once, with no wait.
A write to the client costs more than making a piece: a system call, and on loopback the
client's side of TCP too. So after the first piece (sent alone, at once), the pieces made
without a wait are held, and sent as one when the next piece has to be waited for (the
neuron has sent nothing more yet), at the end, or when :data:`HOLD_BYTES` are held. Nothing
is held while anything is waited on, so no piece reaches the client later than it did one
write at a time; the pieces and their bytes are the same, only the writes are fewer. Telling
"ready" from "must wait" takes one step of the generator driven by hand (:func:`_step`).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Generator, Iterable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

#: Pieces made without a wait are held until this many bytes, at most, then sent.
HOLD_BYTES = 64 * 1024


class Streamed(Response):
    """An answer streamed from ``pieces`` (bytes), status 200."""

    def __init__(
        self,
        pieces: AsyncIterator[bytes],
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
            first = await anext(self.pieces, None)
            if first is not None:  # sent alone and at once; then the client is listened for
                await send({"type": "http.response.body", "body": first, "more_body": True})
                listener = asyncio.get_running_loop().create_task(_disconnect(receive))
                listener.add_done_callback(gone)
                await _send_rest(self.pieces, send)
                listener.remove_done_callback(gone)  # the answer ends first: not a leaving
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


async def _send_rest(pieces: AsyncIterator[bytes], send: Send) -> None:
    """Every piece still to come, those made without a wait held and sent together."""
    held: list[bytes] = []
    size = 0
    while True:
        step = pieces.__anext__().__await__()
        try:
            waits_on = step.send(None)
        except StopIteration as ready:  # made without a wait: held
            piece = ready.value
        except StopAsyncIteration:
            break
        except BaseException:  # the pieces failed: what was made before goes out first
            if held:
                await _send(send, held)
            raise
        else:  # the neuron has sent nothing more yet: what is held goes before the wait
            if held:
                await _send(send, held)
                held, size = [], 0
            try:
                piece = await _step(step, waits_on)
            except StopAsyncIteration:
                return
        held.append(piece)
        size += len(piece)
        if size >= HOLD_BYTES:
            await _send(send, held)
            held, size = [], 0
    if held:
        await _send(send, held)


async def _send(send: Send, pieces: list[bytes]) -> None:
    body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    await send({"type": "http.response.body", "body": body, "more_body": True})


@types.coroutine
def _step(step: Generator[Any, Any, Any], waits_on: Any) -> Generator[Any, Any, Any]:
    """Go on with ``step``, a generator's step begun by hand that stopped to wait on
    ``waits_on`` (a future): what ``await`` does with a step from its start. What the loop
    sends or throws in (a result, a cancellation) goes on to the step; its value is the
    piece."""
    while True:
        try:
            sent = yield waits_on
        except GeneratorExit:
            step.close()
            raise
        except BaseException as error:  # a cancellation, say: the step takes it as it comes
            try:
                waits_on = step.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                waits_on = step.send(sent)
            except StopIteration as done:
                return done.value


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
