"""The chart's side of resharding, rendered without a cluster (helm-python-sdk, as in
test_chart.py): an upgrade renders the post-upgrade Job that adds the shards the map lacks
(an install does not), with the shard count, the admin token from the Secret and the hook
script; lowering ``shards`` below the deployed count fails the render unless the removed
shards are listed as drained; and the hook script picks the missing shards in order."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from chart_rendering import (
    CHART,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    container,
    kubernetes_validate,
    named,
    render,
)
from chart_rendering import chart as chart  # the module-scoped fixture, used by name

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")


def render_upgrade(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    import yaml

    files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
    return [obj for path, text in sorted(files.items()) if not path.endswith("NOTES.txt")
            for obj in yaml.safe_load_all(text) if obj]


def test_an_upgrade_runs_the_hook_job_that_adds_the_new_shards(chart: Any) -> None:
    objects = render_upgrade(chart, {"shards": 3})
    job = named(objects, "Job", f"{RELEASE}-shardkv-reshard")
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate({k: v for k, v in job.items() if k != "__source__"},
                                     version, strict=True)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-upgrade"
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    main = container(job)
    assert main["command"] == ["python3", "/scripts/reshard-hook.py"]
    env = {e["name"]: e for e in main["env"]}
    assert env["SHARDKV_SHARDS"]["value"] == "3"
    assert env["SHARDKV_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == (
        f"{RELEASE}-shardkv")
    # It reaches the coordinators through the network policy's client label.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[f"{RELEASE}-shardkv-client"] == "true"
    scripts = named(objects, "ConfigMap", f"{RELEASE}-shardkv-scripts")
    assert "def missing_shards" in scripts["data"]["reshard-hook.py"]
    assert [s["metadata"]["labels"]["shardkv.io/shard"]
            for s in objects if s["kind"] == "StatefulSet"
            and s["metadata"]["labels"].get("app.kubernetes.io/component") == "node"] == [
        "s1", "s2", "s3"]


def test_an_install_or_a_disabled_hook_renders_no_job(chart: Any) -> None:
    assert not [o for o in render(chart, {"shards": 3}) if o["kind"] == "Job"]
    disabled = render_upgrade(chart, {"resharding": {"hook": {"enabled": False}}})
    assert not [o for o in disabled if o["kind"] == "Job"]


def test_lowering_shards_is_refused_unless_the_shard_was_drained(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match=r"would delete shard s3 .*shard remove s3"):
        render_upgrade(chart, {"shards": 2, "resharding": {"deployedShards": 3}})
    with pytest.raises(helm.HelmError, match="would delete shard s3"):
        render_upgrade(chart, {"shards": 2, "resharding": {"deployedShards": 4,
                                                            "drainedShards": ["s4"]}})
    drained = render_upgrade(chart, {"shards": 2, "resharding": {
        "deployedShards": 4, "drainedShards": ["s3", "s4"]}})
    assert len([o for o in drained if o["kind"] == "StatefulSet"]) == 3  # coordinators too
    same = render_upgrade(chart, {"shards": 3, "resharding": {"deployedShards": 3}})
    assert len([o for o in same if o["kind"] == "StatefulSet"]) == 4


def test_bad_resharding_values_are_refused(chart: Any) -> None:
    for bad in ({"resharding": {"drainedShards": ["shard-3"]}},
                {"resharding": {"deployedShards": -1}},
                {"resharding": {"hook": {"timeoutSeconds": 5}}},
                {"resharding": {"surprise": True}}):
        with pytest.raises(helm.HelmError):
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)


def test_the_hook_adds_missing_shards_in_order() -> None:
    spec = importlib.util.spec_from_file_location(
        "reshard_hook", CHART / "files" / "reshard-hook.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    ring = {"ring": {"shards": {"s1": 1, "s2": 1}}}
    assert hook.missing_shards(ring, 4) == ["s3", "s4"]
    assert hook.missing_shards(ring, 2) == []
    assert hook.missing_shards({"ring": {"shards": {"s1": 1, "s3": 2}}}, 3) == ["s2"]
