"""The shardkv image: what it declares, and that a storage node and a coordinator run in it.

The node runs under the restrictions the Helm chart puts on pods (read-only root filesystem,
no capabilities, no privilege escalation, a writable /data volume and /tmp), serves /health,
takes a put and a get through the published port, stops cleanly on SIGTERM as PID 1, and
finds its data again after a restart. A coordinator started the way the chart starts it (the
chart's coordinator-start.sh, with its peers from DNS names on a user-defined network) forms
a group, and the chart's `helm test` script passes against it and a node.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from container_harness import (
    COORDINATOR_PORT,
    HELM_FILES,
    NODE_PORT,
    POD_LIKE,
    REPO,
    SCRIPTS_VOLUME,
    HttpAnswer,
    http,
    start_coordinator_group,
    start_node,
    wait_http_ok,
    wait_until,
)

SECOND = 1_000_000_000  # Docker healthcheck durations are in nanoseconds


def test_image_declares_user_entrypoint_ports_volume_and_healthcheck(
        docker_client: Any, shardkv_image: str) -> None:
    config = docker_client.images.get(shardkv_image).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["shardkv"]
    assert {"7000/tcp", "7001/tcp", "7100/tcp"} <= set(config["ExposedPorts"])
    assert "/data" in config["Volumes"]
    health = config["Healthcheck"]["Test"]
    assert health[0] == "CMD" and "SHARDKV_HEALTH_URL" in " ".join(health)
    assert "SHARDKV_HEALTH_URL=http://127.0.0.1:7100/health" in config["Env"]
    assert config["Labels"]["org.opencontainers.image.version"]


def _put(base: str, key: str, value: bytes) -> int:
    answer = http("PUT", f"{base}/v1/kv/{key}", value)
    assert answer.status == 200, answer
    version = answer.json()["version"]
    assert answer.headers.get("ETag") == f'"{version}"'
    return version


def _get(base: str, key: str) -> HttpAnswer:
    return http("GET", f"{base}/v1/kv/{key}")


def test_node_serves_health_and_put_get_under_pod_restrictions(
        docker_client: Any, shardkv_image: str, start_container: Any) -> None:
    image_health = docker_client.images.get(shardkv_image).attrs["Config"]["Healthcheck"]
    node = start_container(
        # The engine and fsync policy the chart runs nodes with.
        ["node", "--data-dir", "/data", "--listen", f"0.0.0.0:{NODE_PORT}",
         "--engine", "sqlite", "--fsync", "always"],
        # The image's own health command, checked every second instead of every ten.
        healthcheck={"test": image_health["Test"], "interval": SECOND, "timeout": 3 * SECOND,
                     "retries": 3, "start_period": 0},
        **POD_LIKE,
    )
    base = node.url(NODE_PORT)
    assert wait_http_ok(f"{base}/health").status == 200
    wait_http_ok(f"{base}/ready")

    value = b"hello \x00\xff from a container"
    version = _put(base, "greeting", value)
    answer = _get(base, "greeting")
    assert (answer.status, answer.body) == (200, value)
    assert answer.headers.get("ETag") == f'"{version}"'
    assert _get(base, "absent").status == 404

    metrics = http("GET", f"{base}/metrics")
    assert metrics.status == 200 and b"shardkv_" in metrics.body

    # Docker's view: the image's HEALTHCHECK passes.
    def healthy() -> bool:
        node.raw.reload()
        return node.raw.attrs["State"]["Health"]["Status"] == "healthy"
    wait_until(healthy, timeout=30, what="Docker to report the container healthy")

    uid = node.raw.exec_run(["id", "-u"]).output.decode().strip()
    assert uid == "10001"
    written = node.raw.exec_run(["sh", "-c", "touch /opt/shardkv/x"])
    assert written.exit_code != 0, "the root filesystem must be read-only"

    # SIGTERM reaches the node as PID 1 and it stops cleanly; its data is still there after.
    node.raw.stop(timeout=20)
    node.raw.reload()
    assert node.raw.attrs["State"]["ExitCode"] == 0, node.logs()[-2000:]
    node.raw.start()
    base = node.url(NODE_PORT)
    wait_http_ok(f"{base}/ready")
    answer = _get(base, "greeting")
    assert (answer.status, answer.body) == (200, value)


@pytest.mark.timeout(180)
def test_coordinators_form_a_group_with_the_charts_start_script(
        start_container: Any, container_network: Any) -> None:
    suffix = uuid.uuid4().hex[:6]
    names, coordinators = start_coordinator_group(start_container, container_network, 3, suffix)
    leaders = {http("GET", f"{c.url(COORDINATOR_PORT)}/ready").json()["leader"]
               for c in coordinators}
    assert len(leaders) == 1 and leaders <= set(names)
    map_url = f"{coordinators[0].url(COORDINATOR_PORT)}/v1/map"
    advertised = {f"http://{name}:{COORDINATOR_PORT}" for name in names}

    def announced() -> dict[str, Any] | None:
        # Each member records its URL in the map through Raft once a leader exists, so the
        # last one may land a moment after every member answers /ready.
        cluster_map = http("GET", map_url, headers={"Accept": "application/json"}).json()
        urls = {c["url"] for c in cluster_map["coordinators"].values()}
        return cluster_map if urls == advertised else None

    # Each member advertises its DNS name, as the chart's pods do.
    cluster_map = wait_until(announced, timeout=30,
                             what=f"the map to list the coordinators as {sorted(advertised)}")
    assert set(cluster_map["shards"]) == {"s1"}


@pytest.mark.timeout(240)
def test_helm_test_script_passes_against_a_container_cluster(
        start_container: Any, container_network: Any) -> None:
    """The chart's `helm test` script, in a client container, against three coordinators
    and a node."""
    suffix = uuid.uuid4().hex[:6]
    names, _ = start_coordinator_group(start_container, container_network, 3, suffix)
    coordinator_urls = ",".join(f"http://{name}:{COORDINATOR_PORT}" for name in names)
    start_node(start_container, container_network, f"node-{suffix}", coordinator_urls, "s1")

    tester = start_container(
        ["/scripts/helm-test.py"], ports=(), network=container_network,
        env={"SHARDKV_COORDINATOR": coordinator_urls, "SHARDKV_TEST_TIMEOUT": "120"},
        volumes=SCRIPTS_VOLUME, entrypoint=["python3"], **POD_LIKE)
    outcome = tester.raw.wait(timeout=180)
    output = tester.logs()
    assert outcome["StatusCode"] == 0, output
    assert "PASS" in output


def test_helm_files_are_the_ones_the_chart_renders() -> None:
    """The container test above runs helm/shardkv/files: the ConfigMap must carry them."""
    template = (REPO / "helm" / "shardkv" / "templates" / "scripts-configmap.yaml").read_text()
    for name in ("coordinator-start.sh", "helm-test.py"):
        assert Path(HELM_FILES / name).is_file()
        assert f'.Files.Get "files/{name}"' in template
