"""Talking to a neuron: one adapter per dialect behind one protocol (:class:`NeuronAdapter`)."""

from ganglion.neurons.base import (
    ChatCall,
    Chunk,
    Completion,
    Dialect,
    Embeddings,
    GenerateCall,
    ModelInfo,
    NeuronAdapter,
    ProbeResult,
    TokenStats,
)

__all__ = [
    "ChatCall",
    "Chunk",
    "Completion",
    "Dialect",
    "Embeddings",
    "GenerateCall",
    "ModelInfo",
    "NeuronAdapter",
    "ProbeResult",
    "TokenStats",
]
