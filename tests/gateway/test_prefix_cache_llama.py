"""The prompt cache of a real llama.cpp neuron (llama-cpp-python's server with the bundled
SmolLM2 model) through a real gateway: a conversation's second turn goes back to the neuron
that answered the first, and that server reads only the new tokens, by its own count.

llama-cpp-python keeps the last prompt's KV cache and reuses its longest common prefix with
the next one (llama.cpp's own server does the same with ``cache_prompt``, on by default).
Neither says so in its answer's ``usage``; llama-cpp-python logs it, with its own timings
(``Llama.generate: N prefix-match hit, remaining M prompt tokens to eval`` and
``llama_perf_context_print: prompt eval time = X ms / M tokens``), which is what this test
reads: the server's clock and counts, not ours.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ganglion.local.llama import LOCAL_MODEL, LlamaServer
from tests.conftest import Proc, Spawner, need

PIN = "X-Ganglion-Neuron"
CACHE = "X-Ganglion-Cache"
REMAINING = re.compile(r"prefix-match hit, remaining (\d+) prompt tokens to eval")
PROMPT_EVAL = re.compile(r"prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
DOCUMENT = "The quick brown fox jumps over the lazy dog near the river bank. " * 40


def evaluated(server: LlamaServer) -> list[tuple[int, float]]:
    """``(prompt tokens evaluated, prompt eval ms)`` per request, from the server's log."""
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    return [(int(tokens), float(ms)) for ms, tokens in PROMPT_EVAL.findall(log)]


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Proc, dict[str, LlamaServer]]]:
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    tmp: Path = tmp_path_factory.mktemp("prefix-llama")
    spawner = Spawner(tmp)
    servers = {"a": LlamaServer(log_dir=tmp), "b": LlamaServer(log_dir=tmp)}
    try:
        for server in servers.values():
            server.start()
        gateway = spawner.gateway(f"sqlite:///{tmp / 'g.db'}")
        for name, server in servers.items():
            added = httpx.post(
                f"{gateway.url}/fleet/neurons", json={"url": server.url, "name": name}
            )
            assert added.status_code == 201, added.text
            # llama-cpp-python 0.3.x may answer a new connection's first chat with an
            # immediate stop: one throwaway request each (see test_compat_real.py)
            warm = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
            httpx.post(
                f"{gateway.url}/api/chat",
                json=warm | {"stream": False, "options": {"num_predict": 2}},
                headers={PIN: name},
                timeout=120,
            )
        yield gateway, servers
    finally:
        spawner.close()
        for server in servers.values():
            server.stop()


@pytest.mark.llama
def test_the_second_turn_reads_only_the_new_tokens_on_the_same_neuron(
    fleet: tuple[Proc, dict[str, LlamaServer]],
) -> None:
    gateway, servers = fleet
    messages = [{"role": "user", "content": f"Summarise this text. {DOCUMENT}"}]
    body = {"model": LOCAL_MODEL, "max_tokens": 8, "temperature": 0}
    first = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body | {"messages": messages},
        headers={PIN: "b"},
        timeout=300,
    )
    assert first.status_code == 200, first.text
    assert first.headers[CACHE] == "miss"
    first_read, _ = evaluated(servers["b"])[-1]
    assert first_read > 300  # the whole document, read on b

    messages += [first.json()["choices"][0]["message"], {"role": "user", "content": "Shorter."}]
    before = {name: len(evaluated(server)) for name, server in servers.items()}
    second = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body | {"messages": messages}, timeout=300
    )
    assert second.status_code == 200, second.text
    assert second.headers[PIN] == "b"
    assert second.headers[CACHE] == "hit"
    assert len(evaluated(servers["a"])) == before["a"]  # a read nothing
    second_read, _ = evaluated(servers["b"])[-1]
    assert second_read < first_read / 4, (first_read, second_read)
    log = servers["b"].log_path.read_text(errors="replace")  # type: ignore[union-attr]
    assert int(REMAINING.findall(log)[-1]) == second_read
