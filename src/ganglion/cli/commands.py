"""The command groups, in the order ``--help`` lists them. Each module has ``register(app)``."""

from __future__ import annotations

from types import ModuleType

from ganglion.cli import bench, demo, doctor, keys, local, neuron, run, serve, sim, top

MODULES: list[ModuleType] = [serve, neuron, run, top, bench, keys, local, demo, sim, doctor]
