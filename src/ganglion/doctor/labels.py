"""The labels and annotations that mark a Kubernetes Service as a ganglion neuron.

``ganglion enlist k3s`` writes them; fleet discovery lists Services with :data:`NEURON_SELECTOR`
and reads the neuron's dialect, port, node and URL from the annotations.
"""

from __future__ import annotations

PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF_VALUE = "ganglion"
NEURON_LABEL = "ganglion.dev/neuron"
NEURON_VALUE = "true"

API_ANNOTATION = "ganglion.dev/api"
PORT_ANNOTATION = "ganglion.dev/port"
NODE_ANNOTATION = "ganglion.dev/node"
"""The node the neuron runs on (its Deployment's ``kubernetes.io/hostname``), when set."""
URL_ANNOTATION = "ganglion.dev/url"
"""A URL that replaces the one discovery derives from the Service (a NodePort, an Ingress)."""

NEURON_LABELS: dict[str, str] = {PART_OF_LABEL: PART_OF_VALUE, NEURON_LABEL: NEURON_VALUE}
"""The labels every neuron Service carries."""

NEURON_SELECTOR = f"{PART_OF_LABEL}={PART_OF_VALUE},{NEURON_LABEL}={NEURON_VALUE}"
"""The label selector discovery lists Services with."""

OLLAMA_API = "ollama"
OLLAMA_PORT = 11434
