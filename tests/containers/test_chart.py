"""The Helm chart, without a Kubernetes cluster: Helm's own checks and the cluster's shape.

Helm lints the chart and renders it for several sets of values (chart_rendering.py); every
rendered object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors) of the oldest Kubernetes the chart supports and of a
recent one; the shape follows the values, the Raft peer list matches the coordinator count,
and every flag the chart passes is one the `shardkv` command accepts. Availability and
security are in test_chart_availability.py, metrics and backups in test_chart_operations.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chart_rendering import (
    CHART,
    CUSTOM_KINDS,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    config_env,
    container,
    coordinator_sts,
    helm,
    kubernetes_validate,
    named,
    node_sts,
    render,
)
from chart_rendering import chart as chart  # the module-scoped fixture, used by name
from shardkv.cluster import cli as cluster_cli

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
