"""The exception tree. Every error a user can cause says what was wrong and what to do.

    GanglionError
    ├── ConfigError                 bad settings: a malformed database URL, an unsafe bind
    │   └── ConfigFileError         the config file is invalid (names file and line; exit 2)
    ├── StoreError                  the database cannot be opened or migrated
    ├── NeuronError                 talking to one neuron went wrong
    │   ├── NeuronUnreachable       connection refused, DNS failure, timeout before any byte
    │   ├── NotAnLLMServer          something answered, but not Ollama nor an OpenAI-compatible API
    │   ├── NeuronRequestError      the neuron answered a request with an error status
    │   └── NeuronStreamBroken      the neuron died or misbehaved after the first byte
    ├── FleetError                  the registry refused an operation
    │   ├── DuplicateNeuron         a neuron of that name (or URL) is already registered
    │   ├── UnknownNeuron           no neuron of that name
    │   └── UnknownRun              no orchestrated run has that id
    ├── GatewayError                the CLI could not talk to the gateway, or it refused
    ├── DispatchError               the fleet could not serve a request (has an HTTP ``status``)
    │   ├── NoNeuronForModel        no active neuron serves the model (404)
    │   ├── FleetSaturated          every queue for the model is full: retry later (503)
    │   ├── PinnedUnavailable       the neuron asked for by name is offline or suspended (503)
    │   ├── AllNeuronsFailed        every candidate failed before its first token (502)
    │   ├── NeuronRefused           the neuron refused the request itself, a 4xx (passed on)
    │   └── BrokenMidStream         the neuron failed after the answer had started (502)
    ├── AccessError                 API keys: a request refused, or a key not found
    │   ├── KeyRequired             no key, or a wrong or revoked one (HTTP 401)
    │   ├── AdminRequired           a user key tried to change the fleet (HTTP 403)
    │   └── UnknownApiKey           no key has that prefix (ganglion keys revoke)
    └── LocalFleetError             the embedded default could not start (model or server missing)

``str(error)`` is the one-line message shown to a user; the CLI prints it without a traceback.
"""

from __future__ import annotations


class GanglionError(Exception):
    """Base of every error ganglion raises on purpose."""


class ConfigError(GanglionError):
    """A setting is malformed or unsafe."""


class ConfigFileError(ConfigError):
    """The config file is unreadable or invalid; the message starts ``FILE:LINE:``."""


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


class UnknownRun(FleetError):
    """No run has that id."""


class GatewayError(GanglionError):
    """The gateway could not be reached, or refused the request."""


class AccessError(GanglionError):
    """An API key was missing, wrong, revoked, not allowed, or not found."""


class KeyRequired(AccessError):
    """The gateway needs a valid key and the request had none, or a wrong or revoked one."""


class AdminRequired(AccessError):
    """A user key tried an admin action (changing the fleet)."""


class UnknownApiKey(AccessError):
    """No API key has that prefix."""


class LocalFleetError(GanglionError):
    """The embedded local fleet could not start."""


class DispatchError(GanglionError):
    """The fleet could not serve a request. ``status`` is the HTTP status for the caller;
    ``retry_after_s`` is set when waiting will help."""

    status = 502
    retry_after_s: float | None = None


class NoNeuronForModel(DispatchError):
    status = 404


class FleetSaturated(DispatchError):
    status = 503

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PinnedUnavailable(DispatchError):
    status = 503


class AllNeuronsFailed(DispatchError):
    status = 502


class NeuronRefused(DispatchError):
    """The neuron refused the request itself (a 4xx): the caller's problem, no failover."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BrokenMidStream(DispatchError):
    """The neuron failed after the caller had started receiving the answer."""


def phrase(name: str, message: str, value: object = None) -> str:
    """One pydantic validation message about ``name`` as a sentence: ``("port", "Input
    should be less than or equal to 65535", 70000)`` is ``port should be less than or
    equal to 65535 (got 70000)``. ``value`` is shown when it is short and not ``None``.
    Our own validators' messages start with ``must``: ``name must be ...``."""
    message = message.removeprefix("Value error, ")
    said = message.replace("Input should", f"{name} should", 1)
    if message.startswith("must "):
        said = f"{name} {message}"
    elif said == message:
        said = f"{name}: {message}"
    shown = repr(value)
    return f"{said} (got {shown})" if value is not None and len(shown) <= 40 else said
