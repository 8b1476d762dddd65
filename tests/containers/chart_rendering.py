"""Rendering the Helm chart without a Kubernetes cluster, shared by the chart's tests.

Helm's own Go code (through the helm-python-sdk package: no helm binary) loads and renders
the chart; the value sets here are the ones every test file renders; the helpers pick
objects out of a render. The test modules import ``chart`` (a module-scoped fixture) by
name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed")
yaml = pytest.importorskip("yaml")

CHART = Path(__file__).resolve().parents[2] / "helm" / "shardkv"
RELEASE = "demo"
NAMESPACE = "kv"
# The chart's kubeVersion floor, and a recent release.
KUBERNETES_VERSIONS = ("1.25.0", "1.34.0")
# Custom resources have no schema in kubernetes-validate; they are checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}

# Value sets the chart must render into valid objects.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single": {"coordinators": {"replicas": 1}, "shards": 1, "replicasPerShard": 1},
    "large": {"coordinators": {"replicas": 5}, "shards": 4, "replicasPerShard": 5},
    "everything-optional": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}}},
        "networkPolicy": {"allowExternal": False},
        "coordinators": {"podAntiAffinityPreset": "hard", "startupProbe": {"enabled": True},
                         "nodeAffinityPreset": {"type": "hard", "key": "disk",
                                                "values": ["ssd"]}},
        "nodes": {"persistence": {"storageClass": "fast"},
                  "nodeAffinityPreset": {"type": "soft", "key": "disk", "values": ["ssd"]},
                  "extraEnvVars": [{"name": "SHARDKV_X", "value": "1"}]},
        "service": {"type": "NodePort", "nodePorts": {"http": 30700}},
        "image": {"registry": "registry.example", "pullSecrets": ["regcred"]},
        "commonLabels": {"team": "storage"}, "commonAnnotations": {"owner": "storage"},
    },
    "minimal": {
        "coordinators": {"persistence": {"enabled": False}, "pdb": {"create": False},
                         "livenessProbe": {"enabled": False}},
        "nodes": {"persistence": {"enabled": False}, "pdb": {"maxUnavailable": 1}},
        "networkPolicy": {"enabled": False}, "serviceAccount": {"create": False},
        "podSecurityContext": {"enabled": False}, "tests": {"enabled": False},
        "auth": {"existingSecret": "my-credentials"},
    },
    "backups": {
        "backup": {"enabled": True, "destination": "s3://backups/prod", "keep": 3,
                   "keepDays": 14, "existingSecret": "backup-credentials",
                   "archiveWal": True, "archiveIntervalSeconds": 5,
                   "volume": {"persistentVolumeClaim": {"claimName": "backups"}}},
    },
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (NOTES.txt left out)."""
    files = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document["__source__"] = path
                objects.append(document)
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def coordinator_sts(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return named(objects, "StatefulSet", f"{RELEASE}-shardkv-coordinator")


def node_sts(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in of_kind(objects, "StatefulSet")
            if s["metadata"]["labels"]["app.kubernetes.io/component"] == "node"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"] if "template" in workload["spec"] \
        else workload["spec"]
    (only,) = spec["containers"]
    return only


def config_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return named(objects, "ConfigMap", f"{RELEASE}-shardkv-config")["data"]


def majority(n: int) -> int:
    return n // 2 + 1


