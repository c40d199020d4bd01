"""The answering neuron's header value, worked out once per name: kept within its bound."""

from __future__ import annotations

from ganglion.gateway import front


def test_header_values_are_remembered_within_their_bound() -> None:
    front._header_value.cache_clear()
    bound = front._header_value.cache_info().maxsize
    assert bound is not None
    for number in range(bound + 100):
        assert front._header_value(f"gpu box {number}") == f"gpu%20box%20{number}"
    assert front._header_value.cache_info().currsize == bound
