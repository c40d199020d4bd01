"""``ganglion enlist k3s``: manifests that are valid Kubernetes objects, labelled for discovery."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ganglion.cli import app
from ganglion.doctor import DoctorError, labels
from ganglion.doctor.k3s import Enlistment, manifests

KUBERNETES_VERSION = "1.33"


def enlist(cli, *args: str) -> list[dict[str, Any]]:
    result = cli.invoke(app, ["enlist", "k3s", *args])
    assert result.exit_code == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in docs}


def test_the_objects_and_their_labels(cli) -> None:
    docs = by_kind(enlist(cli, "--node", "gpu-1", "--model", "qwen3:8b"))
    assert set(docs) == {"Namespace", "RuntimeClass", "DaemonSet", "Deployment", "Service"}
    assert docs["RuntimeClass"]["handler"] == "nvidia"
    plugin = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert plugin["containers"][0]["image"].startswith("nvcr.io/nvidia/k8s-device-plugin:")
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-1"}
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert "ollama pull qwen3:8b" in container["lifecycle"]["postStart"]["exec"]["command"][2]
    service = docs["Service"]
    assert service["metadata"]["labels"][labels.PART_OF_LABEL] == "ganglion"
    assert service["metadata"]["labels"][labels.NEURON_LABEL] == "true"
    assert service["metadata"]["annotations"] == {
        "ganglion.dev/api": "ollama",
        "ganglion.dev/port": "11434",
        "ganglion.dev/node": "gpu-1",
    }
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 11434


def test_the_selector_discovery_uses() -> None:
    assert labels.NEURON_SELECTOR == "app.kubernetes.io/part-of=ganglion,ganglion.dev/neuron=true"


def test_manifests_are_valid_kubernetes_objects(cli) -> None:
    validate = pytest.importorskip("kubernetes_validate")
    for doc in enlist(cli, "--node", "node-a.example.lan"):
        validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_dotted_node_name_makes_a_valid_object_name() -> None:
    enlistment = Enlistment("node-a.example.lan")
    assert enlistment.name == "ollama-node-a-example-lan"
    deployment = manifests(enlistment)[3]
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/hostname": "node-a.example.lan"
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node": "Bad_Node"}, "not a Kubernetes node name"),
        ({"node": "ok", "model": "qwen3; rm -rf /"}, "not an Ollama model name"),
        ({"node": "ok", "namespace": "Ganglion"}, "not a Kubernetes namespace name"),
    ],
)
def test_bad_enlistments(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(DoctorError, match=message):
        Enlistment(**kwargs)
