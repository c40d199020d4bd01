"""Talking to a neuron: one adapter per dialect behind one protocol (:class:`NeuronAdapter`)."""

from ganglion.neurons.base import (
    ChatRequest,
    Chunk,
    Completion,
    Dialect,
    Embeddings,
    GenerateRequest,
    ModelInfo,
    NeuronAdapter,
    ProbeResult,
    TokenStats,
)

__all__ = [
    "ChatRequest",
    "Chunk",
    "Completion",
    "Dialect",
    "Embeddings",
    "GenerateRequest",
    "ModelInfo",
    "NeuronAdapter",
    "ProbeResult",
    "TokenStats",
]
