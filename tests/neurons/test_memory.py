"""What a registered neuron's client costs in memory: measured in a fresh interpreter against
its own baseline, so the bound says what one more neuron adds (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys

NEURONS = 300
BOUND_KIB = 64  # a client with its own CA bundle loaded costs about 800 KiB

# Builds NEURONS adapters of each dialect and prints the RSS they added, per adapter, in KiB.
MEASURE = f"""
import json
from ganglion.neurons.detect import adapter_for

def rss_kib():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0])

adapter_for("ollama", "https://127.0.0.1:1")  # the first pays for what all share
before = rss_kib()
kept = [
    adapter_for(api, f"{{scheme}}://127.0.0.1:{{port}}")
    for port in range(1000, 1000 + {NEURONS})
    for api, scheme in (("ollama", "http"), ("openai", "https"))
]
print(json.dumps((rss_kib() - before) / len(kept)))
"""


def test_each_neurons_client_costs_kilobytes_not_a_ca_bundle() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120, check=True
    )
    per_neuron_kib = json.loads(done.stdout)
    assert per_neuron_kib < BOUND_KIB
