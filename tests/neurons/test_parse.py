"""A neuron's answer read into its wire model: from bytes in one pass (``parse_json``), with
the same errors as decoding, then validating (``decode_json`` and ``parse``)."""

from __future__ import annotations

import pytest

from ganglion.errors import NotAnLLMServer
from ganglion.neurons.http import parse_json
from ganglion.wire.ollama import ChatResponse

WHERE = "http://gpu-box:11434/api/chat"


def test_an_answer_is_read_straight_from_its_bytes() -> None:
    reply = parse_json(ChatResponse, b'{"model": "m", "done": true, "eval_count": 7}', WHERE)
    assert (reply.model, reply.done, reply.eval_count) == ("m", True, 7)


def test_an_integer_past_64_bits_is_read() -> None:
    reply = parse_json(
        ChatResponse, b'{"model": "m", "done": true, "eval_count": %d}' % 2**70, WHERE
    )
    assert reply.eval_count == 2**70


def test_what_is_not_json_says_so_and_where() -> None:
    with pytest.raises(NotAnLLMServer, match=f"{WHERE} answered, but not with JSON"):
        parse_json(ChatResponse, b"<html>Welcome to nginx!</html>", WHERE)


def test_json_of_another_shape_names_the_model_and_the_field() -> None:
    with pytest.raises(NotAnLLMServer, match="not a ChatResponse \\(done: "):
        parse_json(ChatResponse, b'{"model": "m", "done": "maybe"}', WHERE)


def test_json_that_only_the_standard_library_reads_is_validated_from_it() -> None:
    """``NaN`` is not JSON to pydantic; Python's reader takes it, as before."""
    with pytest.raises(NotAnLLMServer, match="not a ChatResponse \\(eval_count: "):
        parse_json(ChatResponse, b'{"model": "m", "done": true, "eval_count": NaN}', WHERE)
