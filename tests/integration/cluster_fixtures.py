"""Fixtures for the client and launcher tests: a whole local cluster through the launcher.

``local_cluster`` starts 3 coordinators and 2 shards x 3 members as real processes (memory
engine, fsync never: these tests are about routing and failover, not the disk) once per
module, waits until it is ready, and stops it at teardown. Import the fixture function (pytest
puts this folder on sys.path) and ask for ``local_cluster``:

    from cluster_fixtures import local_cluster_fixture  # noqa: F401  (registers `local_cluster`)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shardkv.cluster.launcher import ClusterPlan, LaunchError, LocalCluster, http_get_json

CLUSTER_READY_TIMEOUT_S = 90.0


@contextlib.contextmanager
def started_cluster(directory: Path, **shape: Any) -> Iterator[LocalCluster]:
    """A local cluster of ``ClusterPlan.new(directory, **shape)``, ready, stopped on exit;
    the test fails (with the launcher's reason) if it does not start."""
    cluster = LocalCluster(directory, ClusterPlan.new(directory, **shape))
    try:
        cluster.start()
        cluster.wait_ready(CLUSTER_READY_TIMEOUT_S)
    except LaunchError as exc:
        cluster.stop()
        pytest.fail(f"the local cluster did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module", name="local_cluster")
def local_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("cluster"), shards=2, replicas=3,
                         coordinators=3, engine="memory", fsync="never") as cluster:
        yield cluster


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
