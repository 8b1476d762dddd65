"""Fixtures for the client and launcher tests: a whole local cluster through the launcher.

``local_cluster`` starts 3 coordinators and 2 shards x 3 members as real processes (memory
engine, fsync never: these tests are about routing and failover, not the disk) once per
module, waits until it is ready, and stops it at teardown. Import the fixture function (pytest
puts this folder on sys.path) and ask for ``local_cluster``:

    from cluster_fixtures import local_cluster_fixture  # noqa: F401  (registers `local_cluster`)
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from shardkv.cluster.launcher import ClusterPlan, LaunchError, LocalCluster, http_get_json

CLUSTER_READY_TIMEOUT_S = 90.0


def node_follows_coordinator() -> bool:
    """Whether the node server runs the coordinator link (registration, heartbeats, map
    watch). Until it does, a launched cluster never gets primaries; read from the source so
    that collecting the tests imports nothing of the node."""
    spec = importlib.util.find_spec("shardkv.node.server")
    if spec is None or spec.origin is None:
        return False
    source = Path(spec.origin).read_text()
    return "coordinator_link" in source or "cluster_membership" in source


def node_replicates() -> bool:
    """Whether the node server runs WAL replication (primary stream, replica follower)."""
    sources = []
    for module in ("shardkv.node.server", "shardkv.node.cluster_membership"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None:
            sources.append(Path(spec.origin).read_text())
    return any("replication_primary" in s or "replication_replica" in s for s in sources)


needs_replication = pytest.mark.skipif(
    not node_replicates(),
    reason="the node server does not run replication yet (node/replication_primary.py and "
    "node/replication_replica.py are not wired into node/server.py): replicas stay empty, so "
    "replica reads and failover cannot be checked",
)


def coordinator_fails_over() -> bool:
    """Whether the coordinator has a failover path (a dead primary replaced by a replica)."""
    spec = importlib.util.find_spec("shardkv.coordinator")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(next(iter(spec.submodule_search_locations)))
    return any("failover" in f.read_text() for f in folder.glob("*.py"))


needs_failover = pytest.mark.skipif(
    not (coordinator_fails_over() and node_replicates()),
    reason="no failover yet: the coordinator has no failover path (nothing in coordinator/ "
    "promotes a replica when a primary dies) or the node does not replicate, so a killed "
    "primary is never replaced",
)


needs_coordinated_nodes = pytest.mark.skipif(
    not node_follows_coordinator(),
    reason="the node server does not follow the coordinator yet (node/coordinator_link.py is "
    "not wired into node/server.py): nodes never register, so shards never get a primary",
)


@pytest.fixture(scope="module", name="local_cluster")
def local_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory: Path = tmp_path_factory.mktemp("cluster")
    plan = ClusterPlan.new(directory, shards=2, replicas=3, coordinators=3,
                           engine="memory", fsync="never")
    cluster = LocalCluster(directory, plan)
    try:
        cluster.start()
        cluster.wait_ready(CLUSTER_READY_TIMEOUT_S)
    except LaunchError as exc:
        cluster.stop()
        pytest.fail(f"the local cluster did not start: {exc}")
    yield cluster
    cluster.stop()


def current_map(cluster: LocalCluster) -> dict:
    for c in cluster.plan.coordinators:
        status, body = http_get_json(f"{c.url}/v1/map")
        if status == 200 and isinstance(body, dict):
            return body
    raise AssertionError("no coordinator served the map")


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    within: float,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)
