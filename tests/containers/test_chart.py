"""The Helm chart, without a Kubernetes cluster.

Helm's own Go code (through the helm-python-sdk package: no helm binary) lints the chart and
renders it for several sets of values; every rendered object is validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors) of the
oldest Kubernetes the chart supports and of a recent one; then the tests check what the
chart must get right: the cluster's shape follows the values, the Raft peer list matches the
coordinator count, probes, volumes, anti-affinity, disruption budgets that keep majorities,
the security context, credentials, network policies, and that every flag the chart passes is
one the `shardkv` command accepts.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed")
yaml = pytest.importorskip("yaml")
from shardkv.cluster import cli as cluster_cli  # noqa: E402

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


# --- Helm's own checks --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str) -> None:
    for kube_version in KUBERNETES_VERSIONS:
        report = helm.lint(str(CHART), VALUE_SETS[name], strict=True,
                           kube_version=f"v{kube_version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]  # warning, error
        assert not report["errors"] and not problems, report


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid_kubernetes(chart: Any, name: str) -> None:
    objects = render(chart, VALUE_SETS[name])
    assert objects
    for obj in objects:
        source = obj.pop("__source__")
        if obj["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{source}: {obj['kind']} {obj['metadata']['name']} is invalid "
                            f"for Kubernetes {version}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("bad", [
    {"shards": 0},
    {"replicasPerShard": 8},
    {"coordinators": {"replicas": 2}},
    {"nodes": {"engine": "rocksdb"}},
    {"nodes": {"fsync": "sometimes"}},
    {"nodes": {"persistence": {"size": "lots"}}},
    {"nodes": {"unknownKey": 1}},
    {"coordinators": {"podAntiAffinityPreset": "medium"}},
    {"image": {"pullPolicy": "Sometimes"}},
])
def test_schema_rejects_bad_values(chart: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad)
    with pytest.raises(helm.HelmError):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)


def test_short_credentials_are_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match="at least 16 characters"):
        chart.render({"auth": {"raftPassword": "short"}}, name=RELEASE, namespace=NAMESPACE)


# --- the cluster's shape ------------------------------------------------------------------

@pytest.mark.parametrize(("coordinators", "shards", "per_shard"),
                         [(1, 1, 1), (3, 2, 3), (5, 4, 2)])
def test_shape_follows_values(chart: Any, coordinators: int, shards: int,
                              per_shard: int) -> None:
    objects = render(chart, {"coordinators": {"replicas": coordinators}, "shards": shards,
                             "replicasPerShard": per_shard})
    assert coordinator_sts(objects)["spec"]["replicas"] == coordinators
    nodes = node_sts(objects)
    assert sorted(s["metadata"]["name"] for s in nodes) == sorted(
        f"{RELEASE}-shardkv-node-s{i}" for i in range(1, shards + 1))
    assert sum(s["spec"]["replicas"] for s in nodes) == shards * per_shard
    for sts in nodes:
        shard = sts["metadata"]["labels"]["shardkv.io/shard"]
        assert sts["spec"]["replicas"] == per_shard
        assert sts["spec"]["selector"]["matchLabels"]["shardkv.io/shard"] == shard
        assert sts["spec"]["template"]["metadata"]["labels"]["shardkv.io/shard"] == shard
        assert f"--shard={shard}" in container(sts)["args"]
    # The coordinators bootstrap exactly these shards with this replication factor.
    args = container(coordinator_sts(objects))["args"]
    assert f"--init-shards={shards}" in args
    assert f"--replication-factor={per_shard}" in args


@pytest.mark.parametrize("coordinators", [1, 3, 5])
def test_peer_list_matches_coordinator_count(chart: Any, coordinators: int) -> None:
    objects = render(chart, {"coordinators": {"replicas": coordinators}})
    sts = coordinator_sts(objects)
    headless = named(objects, "Service", sts["spec"]["serviceName"])
    domain = f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    env = config_env(objects)

    members = [m.split("=", 1) for m in env["SHARDKV_COORDINATOR_MEMBERS"].split(",")]
    pods = [f"{sts['metadata']['name']}-{i}" for i in range(coordinators)]
    assert [member_id for member_id, _ in members] == pods
    assert [host for _, host in members] == [f"{pod}.{domain}" for pod in pods]
    assert env["SHARDKV_COORDINATOR"].split(",") == [
        f"http://{pod}.{domain}:7000" for pod in pods]
    # Peers find each other by DNS before anyone is ready.
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def _flags(args: list[str]) -> dict[str, str]:
    """``--flag value`` and ``--flag=value`` tokens as a dict."""
    flags: dict[str, str] = {}
    tokens = iter(args)
    for token in tokens:
        if token.startswith("--"):
            name, equals, value = token.partition("=")
            flags[name] = value if equals else next(tokens)
    return flags


def _run_start_script(tmp_path: Path, pod: str, members: str,
                      args: tuple[str, ...] = ("--init-shards=2",)) -> list[str]:
    """Run the chart's coordinator-start.sh with a stand-in `shardkv` that records its args."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "args"
    fake = bin_dir / "shardkv"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {record}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POD_NAME": pod,
           "SHARDKV_COORDINATOR_MEMBERS": members, "SHARDKV_HTTP_PORT": "7000",
           "SHARDKV_RAFT_PORT": "7001",
           # every name resolves here: localhost stands in for the pods' DNS names
           "SHARDKV_DNS_WAIT_SECONDS": "0"}
    done = subprocess.run(["sh", str(CHART / "files" / "coordinator-start.sh"), *args],
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return record.read_text().splitlines()


def test_start_script_makes_every_other_member_a_peer(tmp_path: Path) -> None:
    members = "c-0=localhost,c-1=127.0.0.1,c-2=127.0.0.2"
    args = _run_start_script(tmp_path, "c-1", members)
    assert args[:2] == ["coordinator", "--id"] and args[2] == "c-1"
    flags = _flags(args[1:])
    assert flags["--raft"] == "127.0.0.1:7001"
    assert flags["--advertise-url"] == "http://127.0.0.1:7000"
    assert flags["--listen"] == "0.0.0.0:7000"
    assert flags["--peers"] == "c-0=localhost:7001,c-2=127.0.0.2:7001"
    assert flags["--peer-urls"] == "c-0=http://localhost:7000,c-2=http://127.0.0.2:7000"
    assert "--init-shards=2" in args

    alone = _run_start_script(tmp_path, "c-0", "c-0=localhost")
    assert "--peers" not in alone


def test_start_script_refuses_a_pod_that_is_not_a_member(tmp_path: Path) -> None:
    done = subprocess.run(
        ["sh", str(CHART / "files" / "coordinator-start.sh")],
        env={"PATH": os.environ["PATH"], "POD_NAME": "c-3",
             "SHARDKV_COORDINATOR_MEMBERS": "c-0=localhost,c-1=localhost"},
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert "c-3 is not a member" in done.stderr


def test_flags_the_chart_passes_are_flags_shardkv_accepts(chart: Any, tmp_path: Path) -> None:
    """Drift check against the real CLI: parse each container's arguments with shardkv's own
    parser (the $(VAR) references Kubernetes expands are filled in first)."""
    parser = cluster_cli.build_parser()  # our own module: imported, never skipped
    objects = render(chart, VALUE_SETS["everything-optional"])
    expand = {"$(SHARDKV_COORDINATOR)": config_env(objects)["SHARDKV_COORDINATOR"],
              "$(POD_NAME)": "demo-shardkv-node-s1-0", "$(POD_IP)": "10.0.0.7"}
    for sts in node_sts(objects):
        args = container(sts)["args"]
        for ref, value in expand.items():
            args = [a.replace(ref, value) for a in args]
        parsed = parser.parse_args(args)
        assert parsed.command == "node"
    coordinator_args = container(coordinator_sts(objects))["args"]
    members = config_env(objects)["SHARDKV_COORDINATOR_MEMBERS"].replace(
        f".{RELEASE}-shardkv-coordinator-hl.{NAMESPACE}.svc.cluster.local", "")
    # The pods' names stand in for their DNS names; any resolvable host would do.
    members = ",".join(f"{m.split('=')[0]}=localhost" for m in members.split(","))
    args = _run_start_script(tmp_path, "demo-shardkv-coordinator-0", members,
                             tuple(coordinator_args))
    parsed = parser.parse_args(args)
    assert parsed.command == "coordinator"
    assert all(a in args for a in coordinator_args), shlex.join(args)


# --- availability: probes, volumes, placement, budgets -------------------------------------

def test_probes_ask_health_and_ready(chart: Any) -> None:
    objects = render(chart)
    for sts in [coordinator_sts(objects), *node_sts(objects)]:
        c = container(sts)
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert any(p["name"] == "http" for p in c["ports"])
    # Nodes replay their WAL at start: a startup probe keeps liveness from killing them.
    assert container(node_sts(objects)[0])["startupProbe"]["failureThreshold"] >= 60

    tuned = render(chart, {"nodes": {"readinessProbe": {"periodSeconds": 2}},
                           "coordinators": {"livenessProbe": {"enabled": False}}})
    assert container(node_sts(tuned)[0])["readinessProbe"]["periodSeconds"] == 2
    assert "livenessProbe" not in container(coordinator_sts(tuned))


def test_each_member_gets_its_own_volume(chart: Any) -> None:
    objects = render(chart, {"nodes": {"persistence": {"size": "20Gi",
                                                       "storageClass": "fast"}}})
    for sts in [coordinator_sts(objects), *node_sts(objects)]:
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        mounts = {m["mountPath"]: m["name"] for m in container(sts)["volumeMounts"]}
        assert mounts["/data"] == "data"
    for sts in node_sts(objects):
        claim = sts["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
        assert claim["spec"]["storageClassName"] == "fast"

    ephemeral = render(chart, {"nodes": {"persistence": {"enabled": False}}})
    for sts in node_sts(ephemeral):
        assert "volumeClaimTemplates" not in sts["spec"]
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert volumes["data"] == {"name": "data", "emptyDir": {}}


def _anti_affinity(sts: dict[str, Any]) -> dict[str, Any]:
    return sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]


def test_soft_anti_affinity_by_default_spreads_each_shard(chart: Any) -> None:
    objects = render(chart)
    for sts in [coordinator_sts(objects), *node_sts(objects)]:
        rules = _anti_affinity(sts)
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in rules
        (rule,) = rules["preferredDuringSchedulingIgnoredDuringExecution"]
        term = rule["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        # The rule keeps apart exactly the pods of this StatefulSet (for nodes: one shard).
        assert term["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_hard_anti_affinity_and_explicit_affinity(chart: Any) -> None:
    objects = render(chart, {"nodes": {"podAntiAffinityPreset": "hard"}})
    for sts in node_sts(objects):
        (term,) = _anti_affinity(sts)["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["labelSelector"]["matchLabels"]["shardkv.io/shard"] == \
            sts["metadata"]["labels"]["shardkv.io/shard"]
    custom = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    objects = render(chart, {"coordinators": {"affinity": custom}})
    assert coordinator_sts(objects)["spec"]["template"]["spec"]["affinity"] == custom


@pytest.mark.parametrize(("coordinators", "per_shard"), [(1, 1), (3, 3), (5, 2), (5, 5)])
def test_disruption_budgets_keep_majorities(chart: Any, coordinators: int,
                                            per_shard: int) -> None:
    objects = render(chart, {"coordinators": {"replicas": coordinators}, "shards": 3,
                             "replicasPerShard": per_shard})
    budgets = {p["metadata"]["name"]: p for p in of_kind(objects, "PodDisruptionBudget")}
    coordinator_pdb = budgets.pop(f"{RELEASE}-shardkv-coordinator")
    assert coordinator_pdb["spec"]["minAvailable"] == majority(coordinators)
    assert coordinator_pdb["spec"]["selector"]["matchLabels"] == \
        coordinator_sts(objects)["spec"]["selector"]["matchLabels"]
    by_shard = {s["metadata"]["name"]: s for s in node_sts(objects)}
    assert set(budgets) == set(by_shard)
    for name, pdb in budgets.items():
        # Storage shards: one member at a time (a replica counts as down until caught up).
        if per_shard > 1:
            assert pdb["spec"] == {**pdb["spec"], "maxUnavailable": 1}
            assert "minAvailable" not in pdb["spec"]
        else:
            assert pdb["spec"]["minAvailable"] == majority(per_shard)
        assert pdb["spec"]["selector"]["matchLabels"] == \
            by_shard[name]["spec"]["selector"]["matchLabels"]


def test_disruption_budget_overrides(chart: Any) -> None:
    objects = render(chart, {"nodes": {"pdb": {"maxUnavailable": 1}},
                             "coordinators": {"pdb": {"minAvailable": 3}}})
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        if pdb["metadata"]["labels"]["app.kubernetes.io/component"] == "node":
            assert pdb["spec"] == {**pdb["spec"], "maxUnavailable": 1}
            assert "minAvailable" not in pdb["spec"]
        else:
            assert pdb["spec"]["minAvailable"] == 3


# --- security ------------------------------------------------------------------------------

def _pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = [(s["metadata"]["name"], s["spec"]["template"]["spec"])
             for s in of_kind(objects, "StatefulSet")]
    specs += [(p["metadata"]["name"], p["spec"]) for p in of_kind(objects, "Pod")]
    return specs


def test_every_container_runs_non_root_on_a_read_only_root(chart: Any) -> None:
    objects = render(chart)
    pods = _pods(objects)
    assert len(pods) == 1 + 2 + 1  # coordinators, two shards, the helm test pod
    for name, spec in pods:
        assert spec["securityContext"]["fsGroup"] == 10001, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        for c in spec["containers"]:
            context = c["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == 10001, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            # /tmp is writable (an emptyDir) although the root filesystem is not.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_credentials_come_from_a_secret(chart: Any) -> None:
    objects = render(chart)
    (secret,) = of_kind(objects, "Secret")
    assert set(secret["data"]) == {"admin-token", "raft-password", "cluster-token"}
    import base64
    for value in secret["data"].values():
        assert len(base64.b64decode(value)) >= 32  # generated at random
    env = {e["name"]: e for e in container(coordinator_sts(objects))["env"]}
    for variable, key in (("SHARDKV_ADMIN_TOKEN", "admin-token"),
                          ("SHARDKV_RAFT_PASSWORD", "raft-password")):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": key}

    # The cluster credential is a file in every coordinator and node, never an env value.
    for sts in of_kind(objects, "StatefulSet"):
        spec = sts["spec"]["template"]["spec"]
        c = container(sts)
        env = {e["name"]: e for e in c["env"]}
        path = env["SHARDKV_CLUSTER_TOKEN_FILE"]["value"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert path.startswith(mounts["cluster-token"] + "/")
        volume = {v["name"]: v for v in spec["volumes"]}["cluster-token"]["secret"]
        assert volume["secretName"] == secret["metadata"]["name"]
        assert volume["defaultMode"] == 0o400
        assert volume["items"] == [{"key": "cluster-token", "path": "cluster-token"}]

    given = render(chart, {"auth": {"adminToken": "a" * 20, "raftPassword": "r" * 20}})
    (secret,) = of_kind(given, "Secret")
    assert base64.b64decode(secret["data"]["raft-password"]) == b"r" * 20

    existing = render(chart, {"auth": {"existingSecret": "vault-synced",
                                       "existingSecretRaftPasswordKey": "raft"}})
    assert not of_kind(existing, "Secret")
    env = {e["name"]: e for e in container(coordinator_sts(existing))["env"]}
    assert env["SHARDKV_RAFT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "vault-synced", "key": "raft"}


def test_raft_port_is_open_to_coordinators_only(chart: Any) -> None:
    for allow_external in (True, False):
        objects = render(chart, {"networkPolicy": {"allowExternal": allow_external}})
        policy = named(objects, "NetworkPolicy", f"{RELEASE}-shardkv-coordinator")
        coordinator_labels = coordinator_sts(objects)["spec"]["selector"]["matchLabels"]
        assert policy["spec"]["podSelector"]["matchLabels"] == coordinator_labels
        raft_rules = [r for r in policy["spec"]["ingress"]
                      if any(p["port"] == 7001 for p in r["ports"])]
        assert len(raft_rules) == 1
        assert raft_rules[0]["from"] == [{"podSelector": {"matchLabels": coordinator_labels}}]
        for rule in policy["spec"]["ingress"]:
            if rule is not raft_rules[0]:
                assert all(p["port"] != 7001 for p in rule["ports"])
        http_rule = next(r for r in policy["spec"]["ingress"]
                         if any(p["port"] == 7000 for p in r["ports"]))
        # allowExternal: anyone may reach the HTTP port; otherwise the release and clients.
        assert ("from" not in http_rule) is allow_external


# --- metrics, client entry point, helm test -------------------------------------------------

def test_service_monitor_scrapes_both_roles(chart: Any) -> None:
    assert not of_kind(render(chart), "ServiceMonitor")
    objects = render(chart, VALUE_SETS["everything-optional"])
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in of_kind(objects, "Service")
               if selector.items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped) \
        == ["coordinator", "node"]
    for service in scraped:
        assert any(p["name"] == endpoint["port"] for p in service["spec"]["ports"])


def test_disk_alert_rules_use_metrics_the_node_exports(chart: Any) -> None:
    assert not of_kind(render(chart), "PrometheusRule")
    (rule,) = of_kind(render(chart, VALUE_SETS["everything-optional"]), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"ShardkvDiskLow", "ShardkvRefusingWritesDiskFull", "ShardkvDiskFillingUp"} <= set(
        alerts)
    from shardkv.node.metrics import NodeMetrics

    # The names the rules query exist on a node's /metrics (with a store's disk watched).
    metrics = NodeMetrics()
    metrics.watch_disk(lambda: {
        "wal_bytes": 1, "snapshot_bytes": 1, "engine_bytes": 1, "free_bytes": 1,
        "total_bytes": 2, "wal": {"retained_entries": 1, "retained_bytes": 1},
        "snapshot": {"bytes": 1, "running": False},
        "guard": {"floor_bytes": 1, "refusing": False, "refused": 0},
        "compaction": {"running": False, "count": 0}})
    exported = metrics.render().decode()
    for alert in alerts.values():
        for name in re.findall(r"shardkv_[a-z_]+", alert["expr"]):
            assert f"\n{name}" in exported or f"\n{name}{{" in exported, name


def test_client_service_reaches_the_coordinators(chart: Any) -> None:
    objects = render(chart)
    service = named(objects, "Service", f"{RELEASE}-shardkv")
    assert service["spec"]["type"] == "ClusterIP"
    pod_labels = coordinator_sts(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "coordinator"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 7000, "targetPort": "http", "protocol": "TCP"}]


def test_helm_test_pod_puts_and_gets(chart: Any) -> None:
    objects = render(chart)
    (pod,) = of_kind(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    c = container(pod)
    assert c["command"] == ["python3", "/scripts/helm-test.py"]
    scripts = named(objects, "ConfigMap", f"{RELEASE}-shardkv-scripts")["data"]
    assert scripts["helm-test.py"] == (CHART / "files" / "helm-test.py").read_text()
    # Labelled as a client, so that a closed NetworkPolicy still lets it in.
    assert pod["metadata"]["labels"][f"{RELEASE}-shardkv-client"] == "true"


def test_notes_tell_how_to_reach_and_test_the_release(chart: Any) -> None:
    files = chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = next(text for path, text in files.items() if path.endswith("NOTES.txt"))
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes
    assert f"http://{RELEASE}-shardkv.{NAMESPACE}.svc.cluster.local:7000" in notes


def _leaf_paths(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaf_paths(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def test_every_value_has_a_param_comment() -> None:
    """Bitnami's convention: `## @param path description` for every value (a map such as
    `resources` may be documented as a whole), and no comment for a value that is gone."""
    text = (CHART / "values.yaml").read_text()
    documented = {line.split()[2] for line in text.splitlines()
                  if line.lstrip().startswith("## @param ")}
    values = yaml.safe_load(text)
    leaves = set(_leaf_paths(values))
    undocumented = [leaf for leaf in leaves
                    if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    assert not undocumented, f"values without ## @param: {sorted(undocumented)}"

    def exists(path: str) -> bool:
        node: Any = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True
    assert not [d for d in documented if not exists(d)], "## @param for values that do not exist"


def test_helm_test_script_imports_what_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """helm-test.py routes its key with shardkv's own map and ring: a renamed function must
    fail here, not only in a cluster (the script runs end to end in test_image.py)."""
    import importlib.util

    monkeypatch.setenv("SHARDKV_COORDINATOR", "http://127.0.0.1:9")
    spec = importlib.util.spec_from_file_location("helm_test_script",
                                                  CHART / "files" / "helm-test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.COORDINATORS == ["http://127.0.0.1:9"]
    cluster_map = module.ClusterMap.from_dict({
        "version": 3,
        "ring": {"version": 1, "hash": "md5", "vnodes": 160,
                 "shards": {"s1": {"weight": 1}, "s2": {"weight": 1}}},
        "shards": {"s1": {"epoch": 1, "primary": "n1", "members": ["n1"], "state": "active"},
                   "s2": {"epoch": 1, "primary": "n2", "members": ["n2"], "state": "active"}},
        "nodes": {"n1": {"url": "http://n1:7100", "status": "up", "shard": "s1"},
                  "n2": {"url": "http://n2:7100", "status": "up", "shard": "s2"}},
    })
    owners = {module.shard_for_key(cluster_map, f"helm-test/{i}".encode()) for i in range(64)}
    assert owners == {"s1", "s2"}
    assert cluster_map.primary_of("s2").url == "http://n2:7100"


def test_nodes_hand_off_within_their_grace_period(chart: Any) -> None:
    """A stopping primary hands its role over (SHARDKV_HANDOFF_TIMEOUT_S), then drains for
    up to 10 s: both must fit in the pod's grace period, or the kubelet kills it mid-way."""
    for values, handoff in (({}, "8"), ({"nodes": {"handoffTimeoutSeconds": 4}}, "4")):
        for sts in node_sts(render(chart, values)):
            pod = sts["spec"]["template"]["spec"]
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            assert env["SHARDKV_HANDOFF_TIMEOUT_S"] == handoff
            assert float(handoff) + 10 < pod["terminationGracePeriodSeconds"]
            probe = pod["containers"][0]["readinessProbe"]["httpGet"]
            assert probe == {"path": "/ready", "port": "http"}


# --- backups (docs/backup.md) ----------------------------------------------------------------

def test_backup_cronjob_runs_backup_create(chart: Any) -> None:
    """The CronJob's arguments are a `shardkv backup create` the real parser accepts, signed
    with the cluster credential, with the destination's credentials from the Secret."""
    assert not of_kind(render(chart), "CronJob"), "off by default"
    objects = render(chart, VALUE_SETS["backups"])
    job = named(objects, "CronJob", f"{RELEASE}-shardkv-backup")
    assert job["spec"]["schedule"] == "0 3 * * *"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"][f"{RELEASE}-shardkv-client"] == "true"  # network policy
    (main,) = pod["spec"]["containers"]
    args = [a.replace("$(SHARDKV_COORDINATOR)", config_env(objects)["SHARDKV_COORDINATOR"])
            for a in main["args"]]
    parsed = cluster_cli.build_parser().parse_args(args)
    assert (parsed.command, parsed.backup_action, parsed.to) == ("backup", "create",
                                                                 "s3://backups/prod")
    assert (parsed.keep, parsed.keep_days) == (3, 14.0)
    assert {"secretRef": {"name": "backup-credentials"}} in main["envFrom"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["SHARDKV_CLUSTER_TOKEN_FILE"] == "/etc/shardkv/cluster-token/cluster-token"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["backups"]["persistentVolumeClaim"] == {"claimName": "backups"}
    assert {"name": "backups", "mountPath": "/backups"} in main["volumeMounts"]


def test_wal_archiving_reaches_every_node(chart: Any) -> None:
    for sts in node_sts(render(chart)):
        assert "SHARDKV_ARCHIVE_TO" not in {e["name"] for e in container(sts)["env"]}
    for sts in node_sts(render(chart, VALUE_SETS["backups"])):
        main = container(sts)
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["SHARDKV_ARCHIVE_TO"] == "s3://backups/prod"
        assert env["SHARDKV_ARCHIVE_INTERVAL_S"] == "5"
        assert {"secretRef": {"name": "backup-credentials"}} in main["envFrom"]


@pytest.mark.parametrize(("backup", "message"), [
    ({"enabled": True}, "needs backup.destination"),
    ({"archiveWal": True, "destination": "/backups/x"}, "needs an s3:// backup.destination"),
])
def test_backup_values_that_cannot_work_are_refused(chart: Any, backup: dict[str, Any],
                                                    message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        chart.render({"backup": backup}, name=RELEASE, namespace=NAMESPACE)
