"""The exception tree. Every error a user can cause says what was wrong and what to do.

    GanglionError
    ├── ConfigError                 bad settings: a malformed database URL, an unsafe bind
    ├── StoreError                  the database cannot be opened or migrated
    ├── NeuronError                 talking to one neuron went wrong
    │   ├── NeuronUnreachable       connection refused, DNS failure, timeout before any byte
    │   ├── NotAnLLMServer          something answered, but not Ollama nor an OpenAI-compatible API
    │   ├── NeuronRequestError      the neuron answered a request with an error status
    │   └── NeuronStreamBroken      the neuron died or misbehaved after the first byte
    ├── FleetError                  the registry refused an operation
    │   ├── DuplicateNeuron         a neuron of that name (or URL) is already registered
    │   └── UnknownNeuron           no neuron of that name
    ├── GatewayError                the CLI could not talk to the gateway, or it refused
    └── LocalFleetError             the embedded default could not start (model or server missing)

``str(error)`` is the one-line message shown to a user; the CLI prints it without a traceback.
"""

from __future__ import annotations


class GanglionError(Exception):
    """Base of every error ganglion raises on purpose."""


class ConfigError(GanglionError):
    """A setting is malformed or unsafe."""


class StoreError(GanglionError):
    """The database cannot be opened, reached or migrated."""


class NeuronError(GanglionError):
    """Talking to a neuron failed."""


class NeuronUnreachable(NeuronError):
    """No answer at all: connection refused, unknown host, or a timeout before the first byte."""


class NotAnLLMServer(NeuronError):
    """Something answered, but it speaks neither the Ollama nor the OpenAI dialect."""


class NeuronRequestError(NeuronError):
    """The neuron answered with an error status."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class NeuronStreamBroken(NeuronError):
    """The neuron failed after it had started answering."""


class FleetError(GanglionError):
    """The fleet registry refused an operation."""


class DuplicateNeuron(FleetError):
    """A neuron with that name or URL already exists."""


class UnknownNeuron(FleetError):
    """No neuron has that name."""


class GatewayError(GanglionError):
    """The gateway could not be reached, or refused the request."""


class LocalFleetError(GanglionError):
    """The embedded local fleet could not start."""
