"""Kubernetes manifests that enlist a GPU node: the ``nvidia`` RuntimeClass, NVIDIA's device
plugin, and an Ollama Deployment and Service pinned to the node and labelled for discovery.

The device plugin follows NVIDIA's static manifest (k8s-device-plugin's
``deployments/static/nvidia-device-plugin.yml``); K3s registers the ``nvidia`` runtime when it
finds the NVIDIA container runtime on the node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from ganglion.doctor import DoctorError
from ganglion.doctor.defaults import DEFAULT_MODEL, DEFAULT_NAMESPACE, OLLAMA_IMAGE
from ganglion.doctor.labels import (
    API_ANNOTATION,
    NEURON_LABELS,
    NODE_ANNOTATION,
    OLLAMA_API,
    OLLAMA_PORT,
    PART_OF_LABEL,
    PART_OF_VALUE,
    PORT_ANNOTATION,
)

DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.18.0"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
MODELS_DIR = "/var/lib/ganglion/ollama"

_NODE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")


@dataclass(frozen=True)
class Enlistment:
    """What to enlist: the node, the model to pull, where and with which image."""

    node: str
    model: str = DEFAULT_MODEL
    namespace: str = DEFAULT_NAMESPACE
    image: str = OLLAMA_IMAGE

    def __post_init__(self) -> None:
        if len(self.node) > 253 or not _NODE.fullmatch(self.node):
            raise DoctorError(
                f"node name {self.node!r} is not a Kubernetes node name (lowercase letters, "
                "digits, '-' and '.')"
            )
        if not _MODEL.fullmatch(self.model):
            raise DoctorError(f"model {self.model!r} is not an Ollama model name such as qwen3:8b")
        if len(self.namespace) > 63 or not _LABEL.fullmatch(self.namespace):
            raise DoctorError(f"namespace {self.namespace!r} is not a Kubernetes namespace name")

    @property
    def name(self) -> str:
        """``ollama-<node>``, made a valid DNS label (at most 63 characters)."""
        return f"ollama-{self.node.replace('.', '-')}"[:63].rstrip("-")


def runtime_class() -> dict[str, Any]:
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "nvidia", "labels": {PART_OF_LABEL: PART_OF_VALUE}},
        "handler": "nvidia",
    }


def device_plugin() -> dict[str, Any]:
    labels = {"name": "nvidia-device-plugin-ds"}
    container = {
        "name": "nvidia-device-plugin-ctr",
        "image": DEVICE_PLUGIN_IMAGE,
        "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
    }
    pod = {
        "runtimeClassName": "nvidia",
        "nodeSelector": {GPU_NODE_LABEL: "true"},
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-node-critical",
        "containers": [container],
        "volumes": [
            {"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": "nvidia-device-plugin-daemonset",
            "namespace": "kube-system",
            "labels": {PART_OF_LABEL: PART_OF_VALUE},
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def namespace(enlist: Enlistment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": enlist.namespace, "labels": {PART_OF_LABEL: PART_OF_VALUE}},
    }


def _selector(enlist: Enlistment) -> dict[str, str]:
    return {"app.kubernetes.io/name": "ollama", "app.kubernetes.io/instance": enlist.name}


def _ollama_container(enlist: Enlistment) -> dict[str, Any]:
    pull = f"until ollama list >/dev/null 2>&1; do sleep 1; done; ollama pull {enlist.model}"
    probe = {"httpGet": {"path": "/api/version", "port": "http"}, "periodSeconds": 10}
    return {
        "name": "ollama",
        "image": enlist.image,
        "ports": [{"name": "http", "containerPort": OLLAMA_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{OLLAMA_PORT}"},
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        ],
        "resources": {"limits": {GPU_RESOURCE: 1}},
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 30},
        "lifecycle": {"postStart": {"exec": {"command": ["/bin/sh", "-c", pull]}}},
        "volumeMounts": [{"name": "models", "mountPath": "/root/.ollama"}],
    }


def ollama_deployment(enlist: Enlistment) -> dict[str, Any]:
    labels = {**_selector(enlist), **NEURON_LABELS}
    pod = {
        "runtimeClassName": "nvidia",
        "nodeSelector": {"kubernetes.io/hostname": enlist.node},
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [_ollama_container(enlist)],
        "volumes": [
            {"name": "models", "hostPath": {"path": MODELS_DIR, "type": "DirectoryOrCreate"}}
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": enlist.name, "namespace": enlist.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _selector(enlist)},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def ollama_service(enlist: Enlistment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": enlist.name,
            "namespace": enlist.namespace,
            "labels": {**_selector(enlist), **NEURON_LABELS},
            "annotations": {
                API_ANNOTATION: OLLAMA_API,
                PORT_ANNOTATION: str(OLLAMA_PORT),
                NODE_ANNOTATION: enlist.node,
            },
        },
        "spec": {
            "selector": _selector(enlist),
            "ports": [
                {"name": "http", "port": OLLAMA_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def manifests(enlist: Enlistment) -> list[dict[str, Any]]:
    """The objects, in the order ``kubectl apply`` needs them."""
    return [
        namespace(enlist),
        runtime_class(),
        device_plugin(),
        ollama_deployment(enlist),
        ollama_service(enlist),
    ]


def render(enlist: Enlistment) -> str:
    """The manifests as one YAML stream, with how to apply them."""
    header = (
        f"# ganglion enlist k3s: Ollama serving {enlist.model} on node {enlist.node}.\n"
        "# Before applying: install the NVIDIA driver and nvidia-container-toolkit on the node,\n"
        "# restart k3s (it then registers the nvidia runtime), and label the node:\n"
        f"#   kubectl label node {enlist.node} {GPU_NODE_LABEL}=true\n"
        "# Then: kubectl apply -f <this file>\n"
    )
    body = yaml.safe_dump_all(manifests(enlist), sort_keys=False, explicit_start=True)
    return header + body
