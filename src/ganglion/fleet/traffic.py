"""What a request to a neuron reports as it runs: the observer protocol, and how it can fail.

The gateway's :class:`ganglion.gateway.metrics.Metrics` is an observer; the bench and the
request path call one with ``request_started`` and then exactly one of ``request_finished``
or ``request_failed``; the request path also says, with ``prefix_predicted``, how much of a
prompt that started answering its neuron was predicted to hold in its cache. This module
lives in ``fleet`` so that code below the gateway can report without importing it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from ganglion.errors import NeuronRequestError, NeuronStreamBroken
from ganglion.neurons.base import TokenStats


class FailureKind(StrEnum):
    """Why a request to a neuron failed; the ``kind`` label of the error counter."""

    UNREACHABLE = "unreachable"  # no answer: connection refused, DNS, nothing before a timeout
    HTTP_ERROR = "http_error"  # the neuron answered with an error status
    STREAM_BROKEN = "stream_broken"  # it failed after the first byte
    TIMEOUT = "timeout"  # it started but did not finish in time
    REJECTED = "rejected"  # refused by the gateway or the neuron before it ran


def failure_kind(error: BaseException) -> FailureKind:
    """The kind of failure ``error`` is, for the error counter. ``rejected`` is never
    inferred: the caller says it when the gateway refused a request before it ran."""
    if isinstance(error, TimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(error, NeuronStreamBroken):
        return FailureKind.STREAM_BROKEN
    if isinstance(error, NeuronRequestError):
        return FailureKind.HTTP_ERROR
    return FailureKind.UNREACHABLE


class RequestObserver(Protocol):
    """Told about every request to a neuron: once when it starts, once when it ends."""

    def request_started(self, neuron: str, model: str, endpoint: str) -> None: ...

    def request_finished(
        self, neuron: str, model: str, endpoint: str, stats: TokenStats
    ) -> None: ...

    def request_failed(self, neuron: str, model: str, endpoint: str, kind: str) -> None: ...

    def prefix_predicted(self, neuron: str, model: str, cached_tokens: int) -> None:
        """A request started answering on ``neuron``, which was predicted to hold
        ``cached_tokens`` of its prompt in its KV cache (0: a miss)."""
        ...


class Silent:
    """An observer that hears nothing (when no metrics are kept)."""

    def request_started(self, neuron: str, model: str, endpoint: str) -> None:
        pass

    def request_finished(self, neuron: str, model: str, endpoint: str, stats: TokenStats) -> None:
        pass

    def request_failed(self, neuron: str, model: str, endpoint: str, kind: str) -> None:
        pass

    def prefix_predicted(self, neuron: str, model: str, cached_tokens: int) -> None:
        pass
