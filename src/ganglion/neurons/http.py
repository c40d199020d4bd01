"""The HTTP seam every adapter talks through, and the one place HTTP failures become ours.

:class:`NeuronHTTP` sends through a :class:`Link`: for real neurons, the lean client of
:mod:`ganglion.neurons.lean` (plain ``http://``: the gateway's every request passes here) or
aiohttp (TLS, credentials in the URL, a proxy); or an httpx client or transport, so that
tests fake a neuron with ``httpx.MockTransport(handler)``.

Every request is sent streaming, so "before the first byte" is exact: a failure before the
response headers is :class:`~ganglion.errors.NeuronUnreachable`, a failure while reading the
body is :class:`~ganglion.errors.NeuronStreamBroken`, an error status is
:class:`~ganglion.errors.NeuronRequestError`, and a 2xx body that is not JSON (or not the
dialect's JSON, see :func:`parse`) is :class:`~ganglion.errors.NotAnLLMServer`.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import aiohttp
import httpx
import orjson
from pydantic import BaseModel, ValidationError

from ganglion.errors import (
    NeuronRequestError,
    NeuronStreamBroken,
    NeuronUnreachable,
    NotAnLLMServer,
)
from ganglion.neurons.lean import CutOff, LeanClient, NoAnswer, lean_client

#: Connecting must be quick; an answer may take minutes on a slow neuron (a model load).
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=5.0)

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


def parse_json(model: type[Wire], content: bytes, where: str) -> Wire:
    """:func:`parse` of a body straight from its bytes, in one pass: what is not JSON is
    NotAnLLMServer as :func:`decode_json` says it, JSON that is not ``model`` as :func:`parse`
    does."""
    try:
        return model.model_validate_json(content)
    except ValidationError:  # say why as the two steps do (or validate what only Python reads)
        return parse(model, decode_json(content, where, started=False), where)


def decode_json(text: str | bytes, where: str, *, started: bool) -> Any:
    """JSON from a body or a stream line. Garbage before anything valid is NotAnLLMServer;
    garbage after the stream ``started`` is NeuronStreamBroken. orjson reads it (at half the
    standard library's cost); what orjson refuses goes to the standard library, which also
    takes an integer past 64 bits."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
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


async def read_to_end(lines: AsyncIterator[list[bytes]], most: int = TRAILING_LINES) -> None:
    """Read what follows a stream's last message (at most ``most`` more batches of lines,
    normally none but the end of the body), so that the stream ends and its connection goes
    back to the pool: one closed with bytes unread cannot be used again, and the next request
    pays a new one."""
    async for _ in lines:
        most -= 1
        if most <= 0:
            return


# --- the link: one request out, its answer back ---------------------------------------------


class Unanswered(Exception):
    """Nothing answered: no connection, or it closed before the response headers."""


class Answer(Protocol):
    """An answer whose status and headers have come; its body is still to read."""

    status: int
    reason: str
    content_type: str

    async def piece(self) -> bytes | None:
        """What has come of the body since the last call, waiting for it if nothing has;
        ``None`` at its end."""
        ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Link(Protocol):
    """How a :class:`NeuronHTTP` sends: :class:`LeanLink` or :class:`AiohttpLink` for real
    neurons, :class:`HttpxLink` for an httpx client or transport (tests fake neurons with
    ``httpx.MockTransport``). A link raises only :class:`Unanswered` and :class:`CutOff`."""

    @property
    def closed(self) -> bool: ...

    async def open(self, method: str, url: str, body: bytes | None) -> Answer: ...

    async def aclose(self) -> None: ...


JSON_HEADERS = {"Content-Type": "application/json"}


#: Connections are kept open longer than a probe interval (5 s by default), so each probe
#: reuses its neuron's connection rather than paying a new handshake.
KEEPALIVE_S = 120.0


class Connections:
    """The one aiohttp session that the neurons of a registry share: a thousand neurons cost
    one client, not a thousand. It is made on the first request, inside the event loop that
    sends it, and closed by :meth:`aclose`. It keeps a connection per neuron open for
    :data:`KEEPALIVE_S`, with no limit on their number (the router bounds what a neuron is
    sent: its slots and queue; aiohttp's default of 100 would queue the rest unseen), keeps
    no cookies, follows no redirects, and follows the environment's proxy settings as httpx
    does."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
            # aiohttp reads the environment (and ~/.netrc, in a thread) on every request when
            # it trusts it; httpx reads the proxies once. Only when some proxy is set is it.
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


class AiohttpLink:
    """aiohttp's C HTTP parser, straight: the gateway sends every request of every neuron
    through one, at a third of the CPU of httpx on httpcore and h11. Through the shared
    ``connections``, or its own when none is given."""

    def __init__(self, timeout: httpx.Timeout, connections: Connections | None = None) -> None:
        self.closed = False
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout.connect, sock_read=timeout.read
        )
        self._owned = connections is None
        self._connections = connections or Connections()

    async def open(self, method: str, url: str, body: bytes | None) -> Answer:
        try:
            response = await self._connections.session().request(
                method,
                url,
                data=body,
                headers=JSON_HEADERS if body is not None else None,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unanswered(_aiohttp_says(exc)) from exc
        return _AiohttpAnswer(response)

    async def aclose(self) -> None:
        self.closed = True
        if self._owned:
            await self._connections.aclose()


class _AiohttpAnswer:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.reason = response.reason or ""
        self.content_type = response.headers.get("Content-Type", "")

    async def piece(self) -> bytes | None:
        try:
            return await self._response.content.readany() or None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CutOff(_aiohttp_says(exc)) from exc

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CutOff(_aiohttp_says(exc)) from exc

    async def aclose(self) -> None:
        self._response.release()


def _aiohttp_says(exc: BaseException) -> str:
    """What went wrong, as the system said it where it did (not aiohttp's wrapping)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"ConnectError: {exc.os_error}"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "ReadTimeout: no data in time"
    return describe(exc)


class LeanLink:
    """Plain ``http://`` neurons, through :mod:`ganglion.neurons.lean`: a fraction of
    aiohttp's CPU a request, which the gateway pays for every answer it relays and a thousand
    neurons' probes a hundred times a second."""

    def __init__(self, client: LeanClient) -> None:
        self._client = client

    @property
    def closed(self) -> bool:
        return self._client.closed

    async def open(self, method: str, url: str, body: bytes | None) -> Answer:
        try:
            return await self._client.open(method, url, body)
        except NoAnswer as exc:
            raise Unanswered(str(exc)) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


class HttpxLink:
    """An httpx client, borrowed (``owned=False``: never closed here) or this link's own."""

    def __init__(self, client: httpx.AsyncClient, *, owned: bool) -> None:
        self._client = client
        self._owned = owned

    @property
    def closed(self) -> bool:
        return self._client.is_closed

    async def open(self, method: str, url: str, body: bytes | None) -> Answer:
        headers = JSON_HEADERS if body is not None else None
        request = self._client.build_request(method, url, content=body, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise Unanswered(describe(exc)) from exc
        return _HttpxAnswer(response)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


class _HttpxAnswer:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._body: AsyncIterator[bytes] | None = None
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.content_type = response.headers.get("content-type", "")

    async def piece(self) -> bytes | None:
        if self._body is None:
            self._body = self._response.aiter_bytes()
        try:
            return await anext(self._body, None)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise CutOff(describe(exc)) from exc

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise CutOff(describe(exc)) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


# --- one neuron's requests --------------------------------------------------------------------


class NeuronHTTP:
    """One neuron's base URL and link, with the link's failures mapped to ganglion's errors.

    With a ``client`` (borrowed, never closed here) or a ``transport``, requests go through
    httpx (tests); otherwise through a :class:`LeanLink` where one can go (plain ``http://``),
    else through aiohttp (:class:`AiohttpLink`), on the shared ``connections`` when given.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        connections: Connections | None = None,
    ) -> None:
        self.base_url = base_url
        self._link: Link
        if client is not None:
            self._link = HttpxLink(client, owned=False)
        elif transport is not None:
            made = httpx.AsyncClient(transport=transport, timeout=timeout)
            self._link = HttpxLink(made, owned=True)
        elif lean := lean_client(base_url, connect_s=timeout.connect, read_s=timeout.read):
            self._link = LeanLink(lean)
        else:
            self._link = AiohttpLink(timeout, connections)

    async def get_json(self, path: str) -> Any:
        return await self._json("GET", path, None)

    async def post_json(self, path: str, body: dict[str, Any], retry: Retry | None = None) -> Any:
        return await self._json("POST", path, body, retry)

    async def post_for(
        self, wire: type[Wire], path: str, body: dict[str, Any], retry: Retry | None = None
    ) -> Wire:
        """The answer to ``POST path``, validated as ``wire`` straight from its bytes."""
        return parse_json(wire, await self._read("POST", path, body, retry), self.base_url + path)

    async def stream_lines(
        self, path: str, body: dict[str, Any], retry: Retry | None = None
    ) -> AsyncIterator[list[bytes]]:
        """The lines of a streamed ``POST`` answer (NDJSON or SSE), as bytes, in batches: the
        lines each piece of the body completes, blank ones included. A loop over a batch costs
        less than a step of the stream for each line, and a busy neuron's lines come several
        to a piece."""
        answer = await self._open("POST", path, body, retry)
        try:
            rest = b""
            while (data := await answer.piece()) is not None:
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                if lines:
                    yield lines
            if rest.strip():
                yield [rest]
        except CutOff as exc:
            raise NeuronStreamBroken(f"{self.base_url}{path} broke off midway ({exc})") from exc
        finally:
            await answer.aclose()

    async def aclose(self) -> None:
        await self._link.aclose()

    async def _json(
        self, method: str, path: str, body: dict[str, Any] | None, retry: Retry | None = None
    ) -> Any:
        content = await self._read(method, path, body, retry)
        return decode_json(content, f"{method} {self.base_url}{path}", started=False)

    async def _read(
        self, method: str, path: str, body: dict[str, Any] | None, retry: Retry | None
    ) -> bytes:
        answer = await self._open(method, path, body, retry)
        try:
            return await answer.read()
        except CutOff as exc:
            raise NeuronStreamBroken(f"{self.base_url}{path} broke off midway ({exc})") from exc
        finally:
            await answer.aclose()

    async def _open(
        self, method: str, path: str, body: dict[str, Any] | None, retry: Retry | None
    ) -> Answer:
        """Send and wait for the headers; on an error status, ``retry`` may offer another body."""
        try:
            return await self._send(method, path, body)
        except NeuronRequestError as exc:
            again = retry(exc) if retry is not None else None
            if again is None:
                raise
            return await self._send(method, path, again)

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Answer:
        """Send and wait for the headers; raise for no answer or an error status."""
        url = f"{self.base_url}{path}"
        if self._link.closed:  # its neuron was removed while this request was coming
            raise NeuronUnreachable(f"{self.base_url} was removed from the fleet")
        try:
            answer = await self._link.open(method, url, None if body is None else _encode(body))
        except Unanswered as exc:
            raise NeuronUnreachable(
                f"nothing answered at {url} ({exc}); "
                "check that the server is running and that the address and port are right"
            ) from exc
        if 200 <= answer.status < 300:
            return answer
        try:
            content = await answer.read()
        except CutOff:
            content = b""
        finally:
            await answer.aclose()
        raise NeuronRequestError(
            f"{method} {url} answered {answer.status} {answer.reason}: "
            f"{_server_says(answer.content_type, content)}",
            status_code=answer.status,
        )


def _encode(body: dict[str, Any]) -> bytes:
    """``body`` as JSON: with orjson, or, for what it cannot write (an integer past 64 bits,
    which a caller may send in any field), with the standard library, which writes it as
    given: the neuron is the one to say whether it takes it."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


def _server_says(content_type: str, content: bytes) -> str:
    """The server's own error text: the JSON error field if any, else the body's start."""
    try:
        text = error_text(json.loads(content))
    except ValueError:
        text = None
    if text is None:
        kind = content_type.split(";", maxsplit=1)[0].strip()
        if kind and kind not in ("text/plain", "application/json"):
            return f"a {kind} page, not an API error"
        text = content.decode(errors="replace")
    return " ".join(text.split())[:ERROR_TEXT_LIMIT] or "(no error text)"
