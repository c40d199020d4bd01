"""The Helm chart ``deploy/helm/ganglion``, rendered by the real helm (``make test`` installs it:
scripts/install-helm.sh) with its defaults and with the external-PostgreSQL values file, and
every manifest checked by ``kubernetes-validate`` against the schemas of current Kubernetes.

The ServiceMonitor is a custom resource of the Prometheus operator, whose schema
kubernetes-validate does not carry: its fields are checked here against the Service it
selects and the Secret it reads."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ganglion.doctor.labels import NEURON_LABEL, NEURON_SELECTOR
from ganglion.gateway.auth import KEY_PATTERN
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ganglion"
EXTERNAL = CHART / "ci" / "external-postgresql-values.yaml"
VERSIONS = ("1.29", "1.37")
"""The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest schemas
kubernetes-validate carries."""

Doc = dict[str, Any]


def helm() -> str:
    beside = Path(sys.executable).with_name("helm")
    found = str(beside) if beside.exists() else shutil.which("helm")
    need(found is not None, "helm is not installed (make test runs scripts/install-helm.sh)")
    assert found is not None
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


@cache
def render(*values: str, release: str = "demo") -> tuple[Doc, ...]:
    args = [f"--values={v}" if v.endswith(".yaml") else f"--set={v}" for v in values]
    result = run_helm("template", release, str(CHART), "--namespace", "ganglion", *args)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def kinds(docs: tuple[Doc, ...]) -> dict[str, Doc]:
    return {doc["kind"]: doc for doc in docs}


def gateway(docs: tuple[Doc, ...]) -> Doc:
    pod: Doc = kinds(docs)["Deployment"]["spec"]["template"]["spec"]
    return pod


def env_of(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container["env"]}


DEFAULTS: tuple[str, ...] = ()
WITH_EXTERNAL: tuple[str, ...] = (str(EXTERNAL),)


@pytest.mark.parametrize("values", [DEFAULTS, WITH_EXTERNAL], ids=["defaults", "external-pg"])
def test_helm_lint_passes(values: tuple[str, ...]) -> None:
    result = run_helm("lint", "--strict", str(CHART), *[f"--values={v}" for v in values])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", [DEFAULTS, WITH_EXTERNAL], ids=["defaults", "external-pg"])
def test_every_rendered_manifest_is_valid_kubernetes(values: tuple[str, ...]) -> None:
    docs = render(*values)
    checked = []
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            continue  # a custom resource: test_the_service_monitor_scrapes_with_the_user_key
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        checked.append(doc["kind"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount"} <= set(checked)


def test_a_manifest_that_breaks_the_schema_is_caught() -> None:
    deployment = json.loads(json.dumps(kinds(render())["Deployment"]))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_defaults_run_two_spread_replicas_on_the_bundled_postgresql() -> None:
    docs = render()
    found = kinds(docs)
    assert set(found) == {
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "PodDisruptionBudget",
        "Secret",
        "ConfigMap",
        "StatefulSet",
    }
    assert found["Deployment"]["spec"]["replicas"] == 2
    pod = gateway(docs)
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert (
        spread["labelSelector"]["matchLabels"]
        == found["Deployment"]["spec"]["selector"]["matchLabels"]
    )
    env = env_of(pod["containers"][0])
    assert env["GANGLION_DATABASE_URL"]["value"] == (
        "postgresql://ganglion@demo-postgresql:5432/ganglion"
    )
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-postgresql",
        "key": "password",
    }
    assert env["GANGLION_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services["demo-postgresql"]["spec"]["ports"][0]["port"] == 5432
    pdb = found["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"] == found["Deployment"]["spec"]["selector"]


def test_the_external_values_read_the_url_and_keys_from_their_secrets() -> None:
    docs = render(str(EXTERNAL))
    found = kinds(docs)
    assert "StatefulSet" not in found  # no bundled PostgreSQL
    assert "Secret" not in found  # both Secrets are the operator's own
    pod = gateway(docs)
    for container in (pod["containers"][0], pod["initContainers"][0]):
        env = env_of(container)
        assert "PGPASSWORD" not in env
        assert env["GANGLION_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "ganglion-db",
            "key": "url",
        }
    keys = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert keys["secret"]["secretName"] == "ganglion-api-keys"
    assert found["Deployment"]["spec"]["replicas"] == 3
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"
    ingress = found["Ingress"]["spec"]
    assert ingress["ingressClassName"] == "traefik"
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "demo-ganglion", "port": {"name": "http"}}
    assert ingress["tls"] == [{"secretName": "ganglion-tls", "hosts": ["ganglion.example.lan"]}]


def test_an_inline_external_url_is_kept_in_a_secret_and_no_store_at_all_is_refused() -> None:
    url = "postgresql://gw:pw@db.lan:5432/ganglion"
    docs = render("postgresql.enabled=false", f"database.url={url}")
    secret = next(d for d in docs if d["kind"] == "Secret" and "url" in d.get("stringData", {}))
    assert secret["stringData"]["url"] == url
    env = env_of(gateway(docs)["containers"][0])
    assert (
        env["GANGLION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
        == (secret["metadata"]["name"])
    )
    assert url not in json.dumps(kinds(docs)["Deployment"])

    refused = run_helm("template", "x", str(CHART), "--set", "postgresql.enabled=false")
    assert refused.returncode != 0
    assert "the gateways need a PostgreSQL store" in refused.stderr


def test_the_gateway_runs_locked_down_with_probes_and_resources() -> None:
    pod = gateway(render())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for container in (*pod["containers"], *pod["initContainers"]):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert set(container["resources"]) == {"requests", "limits"}
    main = pod["containers"][0]
    assert main["args"][-2:] == ["--discover", "kubernetes"]
    assert env_of(main)["GANGLION_HOST"]["value"] == "0.0.0.0"  # so keys are enforced
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    assert {"/tmp", "/var/lib/ganglion"} <= mounts  # the only places a read-only root writes


def test_the_key_secret_holds_well_formed_keys_that_each_replica_imports() -> None:
    docs = render()
    secret = next(d for d in docs if d["metadata"]["name"] == "demo-ganglion-api-keys")
    keys = {role: base64.b64decode(value).decode() for role, value in secret["data"].items()}
    assert set(keys) == {"admin", "user"}
    assert all(KEY_PATTERN.fullmatch(key) for key in keys.values()), keys
    assert keys["admin"] != keys["user"]
    script = " ".join(gateway(docs)["initContainers"][0]["command"])
    assert "ganglion keys import --admin" in script
    assert "--file /etc/ganglion/keys/admin" in script


def test_rbac_reads_services_and_nothing_else() -> None:
    for docs, role, binding in (
        (render(), "ClusterRole", "ClusterRoleBinding"),
        (render(str(EXTERNAL)), "Role", "RoleBinding"),
    ):
        found = kinds(docs)
        assert found[role]["rules"] == [
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}
        ]
        subject = found[binding]["subjects"][0]
        assert subject["name"] == gateway(docs)["serviceAccountName"]
        assert found[binding]["roleRef"]["name"] == found[role]["metadata"]["name"]
    assert kinds(render(str(EXTERNAL)))["Role"]["metadata"]["namespace"] == "llm"
    off = render("discovery.enabled=false")
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(kinds(off))
    assert gateway(off)["automountServiceAccountToken"] is False
    assert "--discover" not in gateway(off)["containers"][0]["args"]


def test_the_gateway_is_never_taken_for_a_neuron() -> None:
    for doc in render() + render(str(EXTERNAL)):
        labels = doc["metadata"].get("labels") or {}
        assert NEURON_LABEL not in labels, doc["metadata"]["name"]
    assert NEURON_LABEL in NEURON_SELECTOR  # what discovery lists by


def test_the_service_monitor_scrapes_with_the_user_key() -> None:
    docs = render(str(EXTERNAL))
    found = kinds(docs)
    monitor = found["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    service = found["Service"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = spec["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "ganglion-api-keys", "key": "user"},
    }
    assert "ServiceMonitor" not in kinds(render())  # off by default: it needs the CRDs


def test_the_dashboard_configmap_carries_the_dashboard_file() -> None:
    configmap = kinds(render())["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "ganglion.json").read_text())
    assert json.loads(configmap["data"]["ganglion.json"]) == shipped


def test_the_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', project, re.MULTILINE)
    assert version is not None
    assert chart["appVersion"] == version.group(1)


OPAQUE = {"resources", "labels", "annotations", "startup", "liveness", "readiness", "hosts"}
"""Values whose contents are Kubernetes' own fields, documented as one value."""


def value_paths(values: Doc, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in OPAQUE:
            paths += value_paths(value, f"{prefix}{key}.")
        else:
            paths.append(f"{prefix}{key}")
    return paths


def test_every_value_is_documented() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    paths = value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    subchart = yaml.safe_load((CHART / "charts" / "postgresql" / "values.yaml").read_text())
    paths += value_paths(subchart, "postgresql.")
    assert "image.repository" in paths
    assert "postgresql.persistence.size" in paths
    missing = [path for path in paths if f"`{path}`" not in doc]
    assert not missing, missing
