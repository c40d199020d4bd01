"""detect_dialect and the adapter registry, against fake servers of each kind."""

from __future__ import annotations

import httpx
import pytest

from ganglion.errors import ConfigError, NeuronUnreachable, NotAnLLMServer
from ganglion.local.llama import free_port
from ganglion.neurons import Dialect
from ganglion.neurons.detect import ADAPTERS, adapter_for, detect_dialect
from ganglion.neurons.ollama import OllamaAdapter
from ganglion.neurons.openai import OpenAIAdapter

OPENAI_MODELS = {"object": "list", "data": [{"id": "smollm2", "object": "model"}]}


def ollama(request: httpx.Request) -> httpx.Response:
    """Ollama serves its own API and the OpenAI-compatible one."""
    answers = {
        "/api/version": {"version": "0.5.7"},
        "/api/tags": {"models": [{"name": "llama3.2:3b"}]},
        "/api/ps": {"models": []},
        "/v1/models": {"object": "list", "data": [{"id": "llama3.2:3b"}]},
    }
    if request.url.path not in answers:
        return httpx.Response(404, text="404 page not found")
    return httpx.Response(200, json=answers[request.url.path])


def llama_cpp(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/models":
        return httpx.Response(200, json=OPENAI_MODELS)
    return httpx.Response(404, json={"error": {"code": 404, "message": "File Not Found"}})


async def test_ollama_is_detected_first(clock) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return ollama(request)

    dialect, probe = await detect_dialect(
        "http://gpu-box:11434", transport=httpx.MockTransport(handler), clock=clock
    )
    assert dialect is Dialect.OLLAMA
    assert probe.version == "0.5.7"
    assert probe.models == ["llama3.2:3b"]
    assert probe.loaded == []
    assert seen == ["/api/version", "/api/tags", "/api/ps"]


@pytest.mark.parametrize("url", ["http://cpu-box:8080", "http://cpu-box:8080/v1"])
async def test_openai_compatible_server_is_detected(url: str) -> None:
    dialect, probe = await detect_dialect(url, transport=httpx.MockTransport(llama_cpp))
    assert dialect is Dialect.OPENAI
    assert probe.models == ["smollm2"]
    assert probe.loaded is None


@pytest.mark.parametrize(
    "handler",
    [
        lambda request: httpx.Response(404, text="Not Found"),
        lambda request: httpx.Response(200, html="<html>It works!</html>"),
        lambda request: httpx.Response(200, json={"status": "ok"}),
        lambda request: httpx.Response(401, json={"error": "unauthorized"}),
    ],
    ids=["404", "html", "other-json", "401"],
)
async def test_neither_dialect_is_not_an_llm_server(handler) -> None:
    with pytest.raises(NotAnLLMServer) as caught:
        await detect_dialect("http://printer.lan", transport=httpx.MockTransport(handler))
    message = str(caught.value)
    assert "http://printer.lan" in message
    assert "/api/version" in message
    assert "/v1/models" in message
    assert "--api" in message


async def test_nothing_listening_is_unreachable() -> None:
    tried: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.path)
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(NeuronUnreachable) as caught:
        await detect_dialect("http://10.0.0.9:11434", transport=httpx.MockTransport(handler))
    assert "http://10.0.0.9:11434" in str(caught.value)
    assert "running" in str(caught.value)
    assert tried == ["/api/version"]  # no point trying a second dialect on a dead address


async def test_a_real_closed_port_is_unreachable() -> None:
    with pytest.raises(NeuronUnreachable, match=r"127\.0\.0\.1.*running"):
        await detect_dialect(f"http://127.0.0.1:{free_port()}")


def test_registry_has_an_adapter_for_every_dialect() -> None:
    assert set(ADAPTERS) == set(Dialect)
    assert list(ADAPTERS) == [Dialect.OLLAMA, Dialect.OPENAI]  # detection order


@pytest.mark.parametrize(
    ("dialect", "kind"),
    [(Dialect.OLLAMA, OllamaAdapter), ("openai", OpenAIAdapter)],
)
async def test_adapter_for_builds_the_dialects_adapter(dialect, kind) -> None:
    adapter = adapter_for(dialect, "http://box:1234")
    try:
        assert isinstance(adapter, kind)
        assert adapter.dialect == Dialect(dialect)
        assert adapter.url == "http://box:1234"
    finally:
        await adapter.aclose()


def test_adapter_for_an_unknown_dialect_says_which_exist() -> None:
    with pytest.raises(ConfigError, match="ollama, openai"):
        adapter_for("grpc", "http://box:1234")
