"""The simulator: a real HTTP server that answers like an LLM neuron at a configured speed.

``ganglion sim`` serves the Ollama API and the OpenAI API for capacity planning, dashboards
without GPUs, tests and benchmarks. It never pretends to be inference: its answers are
filler words beginning with ``[sim]`` (or a valid instance of a requested JSON schema).

Its modules, each importing only those below it:

- :mod:`~ganglion.local.sim.app`: the ASGI app (:func:`create_sim_app`) and the server
  (:func:`run_sim`), with ``GET /sim/log`` and ``GET /sim/stats``;
- :mod:`~ganglion.local.sim.ollama`, :mod:`~ganglion.local.sim.openai`: the two dialects,
  written with :mod:`ganglion.wire`;
- :mod:`~ganglion.local.sim.dialect`: what the dialects share (reading a request, faults);
- :mod:`~ganglion.local.sim.engine`: the timing model (slots, load, prefill, decode);
- :mod:`~ganglion.local.sim.answers`, :mod:`~ganglion.local.sim.schema`: what it says;
- :mod:`~ganglion.local.sim.config`: :class:`SimConfig`, the neuron being modelled.
"""

from ganglion.local.sim.app import create_sim_app, run_sim
from ganglion.local.sim.config import DEFAULT_OUTPUT_TOKENS, SimConfig

__all__ = ["DEFAULT_OUTPUT_TOKENS", "SimConfig", "create_sim_app", "run_sim"]
