"""A client of the gateway's HTTP API (the CLI, the demo). Failures become one GatewayError."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from ganglion.errors import GatewayError

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class GatewayClient:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Certificates are loaded only for an https gateway: loading the system's CA bundle
        # costs a plain-http command about 45 ms of its start.
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            transport=transport,
            timeout=timeout,
            verify=self.url.startswith("https://"),
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json_body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=json_body)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        self._raise_for_status(response)
        return response.json() if response.content else None

    def stream(self, method: str, path: str, *, json_body: Any = None) -> Iterator[dict[str, Any]]:
        """NDJSON events from a streaming endpoint."""
        try:
            with self._http.stream(method, path, json=json_body, timeout=None) as response:
                if response.is_error:
                    response.read()
                    self._raise_for_status(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """Server-sent events (their ``data`` as JSON) from ``path`` until it ends."""
        try:
            with self._http.stream("GET", path, timeout=None) as response:
                if response.is_error:
                    response.read()
                    self._raise_for_status(response)
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        yield json.loads(line.removeprefix("data:").strip())
        except httpx.TransportError as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: httpx.TransportError) -> GatewayError:
        return GatewayError(
            f"cannot reach the gateway at {self.url} ({type(error).__name__}): start it with "
            "'ganglion serve', or point --gateway / GANGLION_URL at it"
        )

    @staticmethod
    def _raise_for_status(response: httpx.Response) -> None:
        if not response.is_error:
            return
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = body.get("error") or body.get("detail") if isinstance(body, dict) else None
        if isinstance(message, list):  # FastAPI validation errors
            message = "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
                for item in message
            )
        raise GatewayError(str(message or f"the gateway answered {response.status_code}"))
