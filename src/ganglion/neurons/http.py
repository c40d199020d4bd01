"""The HTTP seam every adapter talks through, and the one place httpx failures become ours.

:class:`NeuronHTTP` owns (or borrows) an :class:`httpx.AsyncClient`, so tests fake a neuron
with ``httpx.MockTransport(handler)``. Its own client sends through aiohttp
(:func:`fast_transport`): httpx's API on aiohttp's C parser costs a streamed answer half the
CPU that httpcore and h11 do, on the gateway's every request.

Every request is sent streaming, so "before the first byte" is exact: a failure before the
response headers is :class:`~ganglion.errors.NeuronUnreachable`, a failure while reading the body is
:class:`~ganglion.errors.NeuronStreamBroken`, an error status is
:class:`~ganglion.errors.NeuronRequestError`, and a 2xx body that is not JSON (or not the
dialect's JSON, see :func:`parse`) is :class:`~ganglion.errors.NotAnLLMServer`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import Any, TypeVar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import BaseModel, ValidationError

from ganglion.errors import (
    NeuronRequestError,
    NeuronStreamBroken,
    NeuronUnreachable,
    NotAnLLMServer,
)

#: Connecting must be quick; an answer may take minutes on a slow neuron (a model load).
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=5.0)

#: How much of a server's error body goes into a message.
ERROR_TEXT_LIMIT = 300

Wire = TypeVar("Wire", bound=BaseModel)

#: Given the error a request met, the body to send once more instead, or ``None`` to give up.
Retry = Callable[[NeuronRequestError], dict[str, Any] | None]


def describe(exc: BaseException) -> str:
    """``ConnectError: [Errno 111] Connection refused``, or the class name when it says nothing.
    A failure to connect says what the system said, not aiohttp's wrapping of it."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return f"ConnectError: {cause.os_error}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_text(data: Any) -> str | None:
    """The error in a JSON body, in either dialect, or ``None`` when the body is not an error.

    Ollama says ``{"error": "..."}``; OpenAI-compatible servers ``{"error": {"message": ...}}``;
    FastAPI-based ones (llama-cpp-python) ``{"detail": ...}``.
    """
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if "detail" in data:
        return str(data["detail"])
    return None


def parse(model: type[Wire], data: Any, where: str) -> Wire:
    """Validate ``data`` as ``model``; a mismatch means the server does not speak the dialect."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "body"
        raise NotAnLLMServer(
            f"{where} answered JSON that is not a {model.__name__} ({field}: {problem['msg']}); "
            "is the API dialect right?"
        ) from exc


def decode_json(text: str | bytes, where: str, *, started: bool) -> Any:
    """JSON from a body or a stream line. Garbage before anything valid is NotAnLLMServer;
    garbage after the stream ``started`` is NeuronStreamBroken."""
    try:
        return json.loads(text)
    except ValueError as exc:
        sample = (text if isinstance(text, str) else text.decode(errors="replace"))[:80]
        if started:
            raise NeuronStreamBroken(
                f"{where} sent a line that is not JSON midway: {sample!r}"
            ) from exc
        raise NotAnLLMServer(
            f"{where} answered, but not with JSON ({sample!r}); "
            "is it an LLM server of this dialect?"
        ) from exc


TRAILING_LINES = 8


@cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context every neuron's client verifies with. httpx makes a context per
    client by default, loading the system's CA bundle each time: about 0.8 MB and 45 ms per
    registered neuron, where a shared context costs a client about 7 KB."""
    return httpx.create_ssl_context()


def fast_transport() -> httpx.AsyncBaseTransport:
    """A neuron's transport: aiohttp under httpx. Its session is made on the first request,
    inside the event loop that sends it, and closed with the client. No limit on connections:
    the router bounds what a neuron is sent (its slots and queue), and aiohttp's default of 100
    would queue the rest unseen. Proxy variables are not followed: neurons are on the
    operator's own network."""

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, ssl=tls_context())
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    return AiohttpTransport(verify=tls_context(), client=session)


async def read_to_end(lines: AsyncIterator[bytes], most: int = TRAILING_LINES) -> None:
    """Read what follows a stream's last message (at most ``most`` lines, normally none but the
    end of the body), so that the stream ends and its connection goes back to the pool: one
    closed with bytes unread cannot be used again, and the next request pays a new one."""
    async for _ in lines:
        most -= 1
        if most <= 0:
            return


class NeuronHTTP:
    """One neuron's base URL and client, with httpx's failures mapped to ganglion's errors.

    A ``client`` passed in is borrowed and never closed here; otherwise one is made from
    ``transport`` and ``timeout`` and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport or fast_transport(), timeout=timeout, trust_env=False
        )

    async def get_json(self, path: str) -> Any:
        return await self._json("GET", path, None)

    async def post_json(self, path: str, body: dict[str, Any], retry: Retry | None = None) -> Any:
        return await self._json("POST", path, body, retry)

    async def stream_lines(
        self, path: str, body: dict[str, Any], retry: Retry | None = None
    ) -> AsyncIterator[bytes]:
        """The non-blank lines of a streamed ``POST`` answer (NDJSON or SSE), as bytes: split
        here rather than by httpx's text decoder, which costs a chunk more than parsing it."""
        response = await self._open("POST", path, body, retry)
        try:
            rest = b""
            async for data in response.aiter_bytes():
                *lines, rest = (rest + data).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line
            if rest.strip():
                yield rest
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise NeuronStreamBroken(
                f"{self.base_url}{path} broke off midway ({describe(exc)})"
            ) from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _json(
        self, method: str, path: str, body: dict[str, Any] | None, retry: Retry | None = None
    ) -> Any:
        response = await self._open(method, path, body, retry)
        try:
            content = await response.aread()
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise NeuronStreamBroken(
                f"{self.base_url}{path} broke off midway ({describe(exc)})"
            ) from exc
        finally:
            await response.aclose()
        return decode_json(content, f"{method} {self.base_url}{path}", started=False)

    async def _open(
        self, method: str, path: str, body: dict[str, Any] | None, retry: Retry | None
    ) -> httpx.Response:
        """Send and wait for the headers; on an error status, ``retry`` may offer another body."""
        try:
            return await self._send(method, path, body)
        except NeuronRequestError as exc:
            again = retry(exc) if retry is not None else None
            if again is None:
                raise
            return await self._send(method, path, again)

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        """Send and wait for the headers; raise for no answer or an error status."""
        url = f"{self.base_url}{path}"
        if self._client.is_closed:  # its neuron was removed while this request was coming
            raise NeuronUnreachable(f"{self.base_url} was removed from the fleet")
        request = self._client.build_request(method, url, json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise NeuronUnreachable(
                f"nothing answered at {url} ({describe(exc)}); "
                "check that the server is running and that the address and port are right"
            ) from exc
        if response.is_success:
            return response
        try:
            await response.aread()
        except (httpx.HTTPError, httpx.StreamError):
            pass
        finally:
            await response.aclose()
        raise NeuronRequestError(
            f"{method} {url} answered {response.status_code} {response.reason_phrase}: "
            f"{_server_says(response)}",
            status_code=response.status_code,
        )


def _server_says(response: httpx.Response) -> str:
    """The server's own error text: the JSON error field if any, else the body's start."""
    try:
        text = error_text(response.json())
    except (ValueError, httpx.ResponseNotRead):
        text = None
    if text is None:
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if kind and kind not in ("text/plain", "application/json"):
            return f"a {kind} page, not an API error"
        try:
            text = response.text
        except httpx.ResponseNotRead:
            text = ""
    return " ".join(text.split())[:ERROR_TEXT_LIMIT] or "(no error text)"
