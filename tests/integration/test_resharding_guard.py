"""A ring change that would strand data is refused (issue 12).

Online migration moves keys only for ``POST /admin/shards`` (adding a shard); a raw ring
change (``PUT /admin/ring`` with other weights) moves none, so it is refused while any shard
holds data. A real local cluster (1 coordinator, 2 shards x 1 member, launched as processes):
on the empty cluster the ring may still change; once a key is written, changing a weight is
refused with a clear error and leaves the map as it was, a shard added outside the ring is
still accepted, and the key stays readable where it was.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_fixtures import current_map, started_cluster
from shardkv.client import Client
from shardkv.cluster.launcher import LocalCluster

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", name="small_cluster")
def small_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("guard"), shards=2, replicas=1,
                         coordinators=1, engine="memory", fsync="never") as cluster:
        yield cluster


def send(method: str, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_ring_changes_over_data_are_refused_and_change_nothing(
    small_cluster: LocalCluster,
) -> None:
    coordinator = small_cluster.plan.coordinators[0].url
    # Empty cluster: reweighting is allowed (nothing can be stranded), and back again.
    status, body = send("PUT", f"{coordinator}/admin/ring", {"shards": {"s1": 2, "s2": 1}})
    assert status == 200, body
    status, body = send("PUT", f"{coordinator}/admin/ring", {"shards": {"s1": 1, "s2": 1}})
    assert status == 200, body

    async with Client([coordinator]) as kv:
        version = await kv.put("guarded:key", b"stays")
    before = current_map(small_cluster)

    status, body = send("PUT", f"{coordinator}/admin/ring", {"shards": {"s1": 3, "s2": 1}})
    assert status == 412, body
    assert body["error"] == "VERSION_MISMATCH" and body["retryable"] is False
    assert "hold data" in body["message"] and "strand" in body["message"]
    assert sum(body["keys_per_shard"].values()) >= 1  # the key (and its session record)

    after = current_map(small_cluster)
    assert after["ring"] == before["ring"]
    assert set(after["shards"]) == set(before["shards"])

    # Setting the ring to what it already is changes nothing and is not refused.
    status, body = send("PUT", f"{coordinator}/admin/ring", {"shards": {"s1": 1, "s2": 1}})
    assert status == 200 and body["ring_version"] == before["ring"]["version"], body

    # A shard outside the ring moves no key: still accepted.
    status, body = send("POST", f"{coordinator}/admin/shards", {"in_ring": False})
    assert status == 201, body
    parked = body["shard"]
    after = current_map(small_cluster)
    assert parked in after["shards"] and parked not in after["ring"]["shards"]
    assert after["ring"]["version"] == before["ring"]["version"]

    async with Client([coordinator]) as kv:
        item = await kv.get("guarded:key")
    assert item is not None and item.value == b"stays" and item.version == version
