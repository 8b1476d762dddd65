"""A secured local cluster (cluster credential and an admin token) for the event feed and
dashboard tests, started once per module through the launcher. Importable from every test
folder (``tests/`` is on ``sys.path`` through its conftest):

    from secured_cluster import secured_cluster_fixture  # noqa: F401  (registers it)

The admin token is put in ``os.environ`` so that every process the launcher starts gets it
(tests/conftest.py restores the environment after the module).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.cluster_token import ADMIN_TOKEN_ENV
from shardkv.cluster.launcher import ClusterPlan, LaunchError, LocalCluster, http_get_json

ADMIN_TOKEN = "dashboard-test-admin-token-0123456789"
READY_TIMEOUT_S = 90.0


@dataclass
class SecuredCluster:
    cluster: LocalCluster
    admin_token: str

    @property
    def coordinator_urls(self) -> list[str]:
        return [c.url for c in self.cluster.plan.coordinators]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def current_map(self) -> ClusterMap:
        for url in self.coordinator_urls:
            status, body = http_get_json(f"{url}/v1/map")
            if status == 200 and isinstance(body, dict):
                return ClusterMap.from_dict(body)
        raise AssertionError("no coordinator served the map")

    def leader_and_follower(self) -> tuple[str, str | None]:
        """The leader's URL and one follower's (None with a single coordinator)."""
        leader_id = self.current_map().leader
        urls = {c.id: c.url for c in self.cluster.plan.coordinators}
        followers = [u for cid, u in urls.items() if cid != leader_id]
        return urls[str(leader_id)], (followers[0] if followers else None)


def start_secured(directory: Path, *, shards: int, replicas: int, coordinators: int,
                  timeout: float = READY_TIMEOUT_S) -> LocalCluster:
    """A cluster with the credential ``shardkv up`` generates, started and ready (the test
    fails, with the launcher's reason, when it cannot start)."""
    plan = ClusterPlan.new(directory, shards=shards, replicas=replicas,
                           coordinators=coordinators, engine="memory", fsync="never")
    cluster = LocalCluster(directory, plan)
    cluster.secure()
    try:
        cluster.start()
        cluster.wait_ready(timeout)
    except LaunchError as exc:
        cluster.stop()
        pytest.fail(f"the secured cluster did not start: {exc}")
    return cluster


@pytest.fixture(scope="module", name="secured_cluster")
def secured_cluster_fixture(tmp_path_factory: pytest.TempPathFactory,
                            request: pytest.FixtureRequest) -> Iterator[SecuredCluster]:
    """Module-scoped; ``COORDINATORS`` and ``REPLICAS`` in the test module set the group size
    (default 1) and the members per shard (default 2)."""
    os.environ[ADMIN_TOKEN_ENV] = ADMIN_TOKEN
    cluster = start_secured(tmp_path_factory.mktemp("secured"), shards=2,
                            replicas=getattr(request.module, "REPLICAS", 2),
                            coordinators=getattr(request.module, "COORDINATORS", 1))
    yield SecuredCluster(cluster, ADMIN_TOKEN)
    cluster.stop()
