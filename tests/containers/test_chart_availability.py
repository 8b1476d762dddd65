"""The Helm chart's availability and security, rendered without a cluster: probes, volumes,
anti-affinity, disruption budgets that keep majorities, the security context, credentials
from a Secret and network policies."""

from __future__ import annotations

from typing import Any

import pytest
from chart_rendering import (
    RELEASE,
    container,
    coordinator_sts,
    majority,
    named,
    node_sts,
    of_kind,
    render,
)
from chart_rendering import chart as chart  # the module-scoped fixture, used by name

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
