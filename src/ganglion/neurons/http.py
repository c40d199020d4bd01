"""The HTTP seam every adapter talks through, and the one place httpx failures become ours.

:class:`NeuronHTTP` owns (or borrows) an :class:`httpx.AsyncClient`, so tests fake a neuron
with ``httpx.MockTransport(handler)``. Every request is sent streaming, so "before the
first byte" is exact: a failure before the response headers is
:class:`~ganglion.errors.NeuronUnreachable`, a failure while reading the body is
:class:`~ganglion.errors.NeuronStreamBroken`, an error status is
:class:`~ganglion.errors.NeuronRequestError`, and a 2xx body that is not JSON (or not the
dialect's JSON, see :func:`parse`) is :class:`~ganglion.errors.NotAnLLMServer`.

The GETs (probes: a small JSON body, a thousand neurons' worth every probe interval) may go
instead through one :class:`ProbeClient` that every neuron shares: aiohttp's C parser, about
a sixth of httpx's CPU per request here (0.15 ms against 0.9 ms on loopback), with the same
failures mapped to the same errors. The registry gives one to the neurons it talks to for
real; adapters built with a ``transport`` (the tests' fakes) send everything through httpx.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import Any, TypeVar

import aiohttp
import httpx
from pydantic import BaseModel, ValidationError

from ganglion.errors import (
    NeuronRequestError,
    NeuronStreamBroken,
    NeuronUnreachable,
    NotAnLLMServer,
)

#: Connecting must be quick; an answer may take minutes on a slow neuron (a model load).
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
# As many connections kept open as requests run at once, up to this: the router bounds what
# a neuron is sent (its slots and queue), and a connection closed after each answer (httpx
# keeps 20 by default) costs a new TCP handshake on the next request.
KEEPALIVE = httpx.Limits(max_connections=None, max_keepalive_connections=256)

#: Probe connections are kept open longer than a probe interval (5 s by default), so each
#: probe reuses its neuron's connection rather than paying a new handshake.
PROBE_KEEPALIVE_S = 120.0

#: How much of a server's error body goes into a message.
ERROR_TEXT_LIMIT = 300

Wire = TypeVar("Wire", bound=BaseModel)

#: Given the error a request met, the body to send once more instead, or ``None`` to give up.
Retry = Callable[[NeuronRequestError], dict[str, Any] | None]


def describe(exc: BaseException) -> str:
    """``ConnectError: [Errno 111] Connection refused``, or the class name when it says nothing."""
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


async def read_to_end(lines: AsyncIterator[str], most: int = TRAILING_LINES) -> None:
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
        probes: ProbeClient | None = None,
    ) -> None:
        self.base_url = base_url
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport, timeout=timeout, limits=KEEPALIVE, verify=tls_context()
        )
        self._probes = probes
        self._probe_timeout = None if probes is None else probes.timeout(timeout)

    async def get_json(self, path: str) -> Any:
        """A GET's JSON body: through the shared :class:`ProbeClient` when there is one."""
        if self._probes is None or self._probe_timeout is None:
            return await self._json("GET", path, None)
        self._check_open()
        try:
            return await self._probes.get_json(f"{self.base_url}{path}", self._probe_timeout)
        finally:
            await self._close_dropped()

    async def _close_dropped(self) -> None:
        """Close this client's idle connections that the neuron closed at its end, or that
        outlived httpx's keep-alive. httpx sees either only when it next sends; with the
        probes going elsewhere, a neuron without traffic would otherwise hold them, half
        closed (CLOSE_WAIT), for good."""
        pool = getattr(self._client._transport, "_pool", None)  # httpx's httpcore pool
        for connection in list(getattr(pool, "connections", ())):
            if connection.is_idle() and connection.has_expired():
                await connection.aclose()  # the pool drops it before its next request

    async def post_json(self, path: str, body: dict[str, Any], retry: Retry | None = None) -> Any:
        return await self._json("POST", path, body, retry)

    async def stream_lines(
        self, path: str, body: dict[str, Any], retry: Retry | None = None
    ) -> AsyncIterator[str]:
        """The non-blank lines of a streamed ``POST`` answer (NDJSON or SSE)."""
        response = await self._open("POST", path, body, retry)
        try:
            async for line in response.aiter_lines():
                if line.strip():
                    yield line
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
        self._check_open()
        request = self._client.build_request(method, url, json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise unreachable(url, exc) from exc
        if response.is_success:
            return response
        content = b""
        try:
            content = await response.aread()
        except (httpx.HTTPError, httpx.StreamError):
            pass
        finally:
            await response.aclose()
        kind = response.headers.get("content-type", "")
        status, reason = response.status_code, response.reason_phrase
        raise refused(f"{method} {url}", status, reason, kind, content)

    def _check_open(self) -> None:
        if self._client.is_closed:  # its neuron was removed while this request was coming
            raise NeuronUnreachable(f"{self.base_url} was removed from the fleet")


class ProbeClient:
    """The one client every neuron's GETs share: an aiohttp session, made on the first request
    inside the loop that sends it and closed by :meth:`aclose`. It keeps a connection per
    neuron (no limit on their number) for :data:`PROBE_KEEPALIVE_S`, follows the
    environment's proxy settings as httpx does, keeps no cookies, and follows no redirects."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
        """httpx's connect and read timeouts, as aiohttp takes them."""
        return aiohttp.ClientTimeout(
            total=None, sock_connect=timeout.connect, sock_read=timeout.read
        )

    async def get_json(self, url: str, timeout: aiohttp.ClientTimeout) -> Any:
        """``url``'s JSON body, with the failures :class:`NeuronHTTP` raises for the same."""
        session = self._session or self._open()
        try:
            response = await session.get(url, timeout=timeout, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unreachable(url, exc) from exc
        success = 200 <= response.status < 300  # as httpx says (aiohttp's ok takes a 3xx)
        async with response:
            try:
                content = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                if success:
                    raise NeuronStreamBroken(f"{url} broke off midway ({describe(exc)})") from exc
                content = b""
        if not success:
            kind = response.headers.get("content-type", "")
            raise refused(f"GET {url}", response.status, response.reason or "", kind, content)
        return decode_json(content, f"GET {url}", started=False)

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0, ssl=tls_context(), keepalive_timeout=PROBE_KEEPALIVE_S
        )
        # aiohttp reads the environment (and ~/.netrc, in a thread) on every request when it
        # trusts it; httpx reads the proxies once. Only when some proxy is set is it asked.
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=bool(urllib.request.getproxies()),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def unreachable(url: str, exc: BaseException) -> NeuronUnreachable:
    return NeuronUnreachable(
        f"nothing answered at {url} ({describe(exc)}); "
        "check that the server is running and that the address and port are right"
    )


def refused(
    request: str, status: int, reason: str, content_type: str, body: bytes
) -> NeuronRequestError:
    """``request`` (``GET URL``) answered an error ``status``: what the server said of it."""
    return NeuronRequestError(
        f"{request} answered {status} {reason}: {_server_says(content_type, body)}",
        status_code=status,
    )


def _server_says(content_type: str, body: bytes) -> str:
    """The server's own error text: the JSON error field if any, else the body's start."""
    try:
        text = error_text(json.loads(body))
    except ValueError:
        text = None
    if text is None:
        kind = content_type.split(";", maxsplit=1)[0].strip()
        if kind and kind not in ("text/plain", "application/json"):
            return f"a {kind} page, not an API error"
        text = body.decode(errors="replace")
    return " ".join(text.split())[:ERROR_TEXT_LIMIT] or "(no error text)"
