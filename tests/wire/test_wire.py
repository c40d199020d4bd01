"""The writing side of ganglion.wire: what the gateway and the simulator send parses back
through the same wire models the neuron adapters read with, and SSE is framed one way."""

from __future__ import annotations

import ast
import base64
import json
import math
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ganglion.wire import ollama, openai, sse
from ganglion.wire.encoding import TEXT_MARK, dumps, quoted


@pytest.mark.parametrize("micro", [0, 120, 642799])
def test_a_moment_is_written_as_its_timestamp(micro: int) -> None:
    """The gateway hands ``answer`` the moment itself; it reads as Ollama writes it."""
    moment = datetime(2026, 11, 30, 15, 0, 0, micro, tzinfo=UTC)
    written = json.loads(ollama.line(ollama.answer("m", "hi", chat=True, created_at=moment)))
    assert written["created_at"] == ollama.timestamp(moment)
    assert written["created_at"].endswith("Z")


def test_an_ollama_stream_piece_and_its_end_read_back() -> None:
    piece = ollama.answer("m", "hi", chat=True, created_at="2024-01-01T00:00:00Z")
    assert json.loads(ollama.line(piece)) == {
        "model": "m",
        "created_at": "2024-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "hi"},
        "done": False,
    }
    end = ollama.ending(
        "length", total_s=2.0, load_s=0.0, prompt_tokens=3, prompt_s=0.5, eval_count=4, eval_s=None
    )
    last = ollama.GenerateResponse.model_validate_json(
        dumps(ollama.answer("m", "", chat=False, created_at="t", end=end))
    )
    assert (last.done, last.done_reason, last.total_duration) == (True, "length", 2_000_000_000)
    assert (last.prompt_eval_count, last.prompt_eval_duration) == (3, 500_000_000)
    assert last.eval_duration is None
    assert '"eval_duration"' not in dumps(end)


def test_ollama_models_leave_out_what_is_absent() -> None:
    shown = ollama.ShowResponse(details=ollama.ModelDetails(format=""), capabilities=["x"])
    assert json.loads(shown.encode())["details"] == {"format": ""}
    assert "modified_at" not in shown.encode()


@pytest.mark.parametrize("usage", [False, True])
def test_an_openai_chat_stream_reads_back(usage: bool) -> None:
    reply = openai.Reply(id="chatcmpl-1", created=7, model="m", chat=True, include_usage=usage)
    first = openai.ChatCompletionChunk.model_validate(reply.chunk("a", role="assistant"))
    assert first.choices[0].delta == openai.Delta(role="assistant", content="a")
    last = reply.chunk(None, "stop")
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert ("usage" in last) is usage
    tail = reply.event(reply.usage_chunk(openai.usage(2, 3)))
    assert tail.startswith("data: ")
    assert tail.endswith("\n\n")
    counted = openai.ChatCompletionChunk.model_validate_json(tail.removeprefix("data: "))
    assert counted.choices == []
    assert counted.usage == openai.Usage.of(2, 3)
    assert counted.object == "chat.completion.chunk"


def test_an_openai_whole_text_completion_reads_back() -> None:
    reply = openai.Reply(id="cmpl-1", created=7, model="m", chat=False, system_fingerprint="fp")
    whole = openai.ChatCompletion.model_validate_json(
        dumps(reply.whole("text", "length", openai.usage(1, 1)))
    )
    assert (whole.object, whole.system_fingerprint) == ("text_completion", "fp")
    assert whole.choices[0].text == "text"
    assert whole.choices[0].finish_reason == "length"


#: Texts a token may carry that JSON must escape, or that UTF-8 writes in several bytes.
TRICKY_TEXTS = ["hi ", "", 'a"b\\c', "\x00\x1f\x7f", "\n\t\r\b\f", "é漢字😀", "\u2028", "</s>"]

#: Model names a caller may send: one that looks like the mark the ends are cut at, too.
TRICKY_MODELS = ["m", 'm"1', TEXT_MARK, ollama.MOMENT_MARK, "漢"]


@pytest.mark.parametrize("model", TRICKY_MODELS)
@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("usage", [False, True])
def test_an_openai_text_event_is_the_event_of_its_chunk(
    model: str, chat: bool, usage: bool
) -> None:
    reply = openai.Reply(id="c-1", created=7, model=model, chat=chat, include_usage=usage)
    for text in TRICKY_TEXTS:
        assert reply.text_event(text) == reply.event(reply.chunk(text)).encode()


@pytest.mark.parametrize("model", TRICKY_MODELS)
@pytest.mark.parametrize("chat", [True, False])
def test_an_ollama_text_line_is_the_line_of_its_answer(model: str, chat: bool) -> None:
    lines = ollama.TextLines(model, chat=chat)
    for micro in (0, 120, 642799):
        moment = datetime(2026, 11, 30, 15, 0, 0, micro, tzinfo=UTC)
        for text in TRICKY_TEXTS:
            written = ollama.line(ollama.answer(model, text, chat=chat, created_at=moment))
            assert lines.line(text, moment) == written.encode()


def test_a_lone_surrogate_is_written_escaped() -> None:
    """A neuron's JSON may carry one (``"\\ud800"``); UTF-8 cannot, so it goes escaped."""
    reply = openai.Reply(id="c-1", created=7, model="m", chat=True)
    event = reply.text_event("a\ud800b")
    chunk = json.loads(event.removeprefix(b"data: "))
    assert chunk["choices"][0]["delta"]["content"] == "a\ud800b"
    assert json.loads(quoted("\udfff")) == "\udfff"


def test_openai_embeddings_as_floats_or_base64() -> None:
    vector = [0.5, -1.0]
    answer = openai.EmbeddingResponse(
        object="list", data=[openai.Embedding(object="embedding", embedding=vector)], model="m"
    )
    assert json.loads(answer.encode())["data"][0]["embedding"] == vector
    encoded = json.loads(answer.encode("base64"))["data"][0]["embedding"]
    assert list(struct.unpack("<2f", base64.b64decode(encoded))) == vector


def test_server_sent_events_are_framed_one_way() -> None:
    assert sse.event("[DONE]") == sse.DONE
    assert sse.json_event({"a": 1}, "run") == 'event: run\ndata: {"a":1}\n\n'
    assert sse.comment("keep-alive") == ": keep-alive\n\n"
    assert sse.retry(2000) == "retry: 2000\n\n"


SIM_LAYERS = ["config", "schema", "answers", "engine", "dialect", "ollama", "openai", "app"]


def test_the_simulator_package_imports_only_downwards() -> None:
    """Each module of ganglion.local.sim imports only the modules listed before it."""
    package = Path(__file__).parents[2] / "src/ganglion/local/sim"
    assert sorted(p.stem for p in package.glob("*.py")) == sorted([*SIM_LAYERS, "__init__"])
    for index, name in enumerate(SIM_LAYERS):
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("ganglion.local.sim.")
        }
        assert imported <= set(SIM_LAYERS[:index]), f"{name} imports {imported}"


@pytest.mark.parametrize("cached", [None, 0, 5])
def test_openai_usage_as_a_dict_is_what_the_model_writes(cached: int | None) -> None:
    written = json.loads(openai.Usage.of(7, 3, cached).encode())
    assert openai.usage(7, 3, cached) == written
    assert written["total_tokens"] == 10
    assert ("prompt_tokens_details" in written) is (cached is not None)


def test_json_is_written_whatever_the_values() -> None:
    moment = datetime(2026, 11, 30, 17, 59, 58, 666878, tzinfo=UTC)
    assert json.loads(dumps({"at": moment, "x": math.nan, "y": math.inf})) == {
        "at": "2026-11-30T17:59:58.666878Z",
        "x": None,  # nothing but a number may stand there: every JSON reader takes null
        "y": None,
    }
    # what orjson refuses, pydantic-core writes
    assert json.loads(dumps({"n": 2**70, "tags": frozenset({"a"})})) == {"n": 2**70, "tags": ["a"]}
    assert dumps({"text": "é\n"}) == '{"text":"é\\n"}'  # compact, UTF-8
