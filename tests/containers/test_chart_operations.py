"""The Helm chart's operations side, rendered without a cluster: metrics and alert rules,
the client entry point, `helm test`, the notes, a documented parameter for every value, the
nodes' grace period for a handoff, and the backup CronJob with WAL archiving."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from chart_rendering import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    config_env,
    container,
    coordinator_sts,
    helm,
    named,
    node_sts,
    of_kind,
    render,
    yaml,
)
from chart_rendering import chart as chart  # the module-scoped fixture, used by name
from shardkv.cluster import cli as cluster_cli

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
