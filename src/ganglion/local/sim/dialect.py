"""What the simulator's two dialects share: reading a request, noting it in the log, faults.

The dialects themselves are :mod:`ganglion.local.sim.ollama` and
:mod:`ganglion.local.sim.openai`. Errors come back in the caller's dialect. Every
generation first draws its fault (``--fail-rate``: HTTP 500 before any byte;
``--hang-rate``: no answer until the client gives up; ``--stall-rate``: a stream that stops
after ``--stall-after-tokens`` tokens, a hang to a caller that does not stream).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextlib import aclosing
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ganglion.local.sim.answers import count_tokens, filler, text_pieces
from ganglion.local.sim.engine import Fault, Generation, Simulator

Endpoint = Callable[[Request], Awaitable[Response]]

PROMPT_LOGGED = 200
"""How much of the last message a log entry keeps."""

LOG_SCOPE_KEY = "ganglion.sim.log_entry"
"""Where the request-log middleware puts a request's log entry in its ASGI scope."""


class Encodable(Protocol):
    """A wire model of either dialect (:mod:`ganglion.wire.ollama`, :mod:`ganglion.wire.openai`)."""

    def encode(self) -> str: ...


def answer_json(answer: Encodable, status: int = 200) -> Response:
    """A wire model as the whole JSON body of a response."""
    return Response(answer.encode(), status_code=status, media_type="application/json")


class BadRequest(Exception):
    """The request body is not what the endpoint takes; answered 400 in the caller's dialect."""


class HangResponse(Response):
    """Answer nothing at all, not even headers, until the client hangs up."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__()
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.sim.hanging += 1
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self.sim.hanging -= 1


async def read_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise BadRequest(f"invalid JSON body: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def guarded(handler: Endpoint, bad_request: Callable[[str], Response]) -> Endpoint:
    """``handler``, answering a :class:`BadRequest` it raises with ``bad_request(message)``."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as error:
            return bad_request(str(error))

    return endpoint


def note_model(request: Request, model: object) -> None:
    """Put the requested model into this request's log entry."""
    entry = log_entry(request.scope)
    if entry is not None and isinstance(model, str):
        entry["model"] = model


def note_prompt(request: Request, messages: list[Any]) -> None:
    """Put the start of the last message into this request's log entry, so a test can tell
    which work a neuron was asked for (and how many times)."""
    entry = log_entry(request.scope)
    if entry is not None and messages and isinstance(messages[-1], dict):
        entry["prompt"] = text_of(messages[-1].get("content"))[:PROMPT_LOGGED]


CONTEXT_TOKENS = 1 << 15
"""The longest answer a simulated neuron writes, whatever the client's limit: a real server
stops at its context window (and a client may ask for any number)."""


def output_for(sim: Simulator, limit: object, answer: str | None) -> tuple[list[str], str]:
    """The tokens to emit and the done reason: the ``answer`` (JSON text) to a
    structured-output request in full, else filler up to the client's length limit (or the
    default length)."""
    if answer is not None:
        return text_pieces(answer), "stop"
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return filler(min(limit, CONTEXT_TOKENS)), "length"
    return filler(sim.config.output_tokens), "stop"


def hangs(fault: Fault | None, streaming: bool) -> bool:
    """Whether to answer nothing at all: a hang, or a stall seen by a caller that does not
    stream (the tokens before the stall would never leave the server)."""
    return fault == "hang" or (fault == "stall" and not streaming)


def stall_point(sim: Simulator, fault: Fault | None) -> int | None:
    """How many tokens a stalling stream sends before it stops (None: it does not stall)."""
    return sim.config.stall_after_tokens if fault == "stall" else None


def text_of(content: object) -> str:
    """The text of a message's content: a string, or OpenAI's list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_tokens(texts: Iterable[str]) -> int:
    return max(1, sum(count_tokens(text) for text in texts))


def prompt_words(texts: Iterable[str]) -> list[str]:
    """A prompt's tokens, as the simulator counts them: its words, message after message."""
    return [word for text in texts for word in text.split()]


def messages_words(messages: object) -> list[str]:
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list")
    return prompt_words(text_of(m.get("content")) for m in messages if isinstance(m, dict))


async def collect(sim: Simulator, job: Generation) -> str:
    parts: list[str] = []
    async with aclosing(sim.run(job)) as batches:
        async for batch in batches:
            parts.extend(batch)
    return "".join(parts)


def embed_inputs(value: object) -> list[str]:
    """Embedding inputs as texts: a string, a list of strings, or token-id lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    if isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    raise BadRequest("'input' must be a string or a list of strings")


def log_entry(scope: MutableMapping[str, Any]) -> dict[str, Any] | None:
    """The log entry the request-log middleware attached to this request, if any."""
    entry = scope.get(LOG_SCOPE_KEY)
    return entry if isinstance(entry, dict) else None
