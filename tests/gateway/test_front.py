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


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_raw_answer_headers_say_what_the_mapping_says() -> None:
    for name, cached in (("gpu-1", 0), ("gpu box é", 12)):
        neuron = _Named(name)
        raw = front.raw_answered(neuron, cached)  # type: ignore[arg-type]
        said = {key.lower(): value for key, value in front.answered(neuron, cached).items()}  # type: ignore[arg-type]
        assert {k.decode(): v.decode("latin-1") for k, v in raw} == said
        assert all(key == key.lower() for key, _ in raw)


async def test_a_whole_answer_is_sent_with_its_length_type_and_headers() -> None:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        raise AssertionError("a whole answer reads nothing")

    body = '{"text":"héllo"}'.encode()
    answer = front.Answer(body, front.raw_answered(_Named("gpu-1"), 3))  # type: ignore[arg-type]
    await answer({"type": "http"}, receive, send)  # type: ignore[arg-type]
    start, whole = sent
    assert start["status"] == 200
    assert dict(start["headers"]) == {  # type: ignore[call-overload]
        b"content-length": str(len(body)).encode(),
        b"content-type": b"application/json",
        b"x-ganglion-neuron": b"gpu-1",
        b"x-ganglion-cache": b"hit",
    }
    assert whole["body"] == body
