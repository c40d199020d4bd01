"""The defaults the doctor's commands show in their help: kept apart from the modules that
use them, so ``ganglion --help`` need not load the passthrough planner or YAML."""

from __future__ import annotations

#: ``ganglion doctor vfio``: the VM a passed-through GPU goes to.
DEFAULT_MEMORY_GIB = 16
DEFAULT_CPUS = 4
#: ``ganglion enlist k3s``: the Ollama deployment on the enlisted node.
OLLAMA_IMAGE = "docker.io/ollama/ollama:latest"
DEFAULT_MODEL = "llama3.2:3b"
DEFAULT_NAMESPACE = "ganglion"
