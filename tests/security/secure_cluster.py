"""A secured cluster of real processes for the attack tests, and how to see that nothing
changed.

``secure_cluster``: 3 coordinators and 2 shards x 3 nodes through the launcher, with the
credential ``shardkv up`` generates (``LocalCluster.secure``), once per module. The test
process reads the token from the cluster directory only to check, as an operator, what the
attacks left behind (``state_of``); the attacks themselves never use it.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from secured_cluster import start_secured
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.peer_auth import OPERATOR, signed_headers

pytestmark = pytest.mark.integration
READY_TIMEOUT_S = 120.0


@pytest.fixture(scope="module", name="secure_cluster")
def secure_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = start_secured(tmp_path_factory.mktemp("secure-cluster"), shards=2, replicas=3,
                            coordinators=3, timeout=READY_TIMEOUT_S)
    yield cluster
    cluster.stop()


@dataclass
class Answer:
    status: int
    body: Any


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return Answer(status, json.loads(raw) if raw else None)
    except ValueError:
        return Answer(status, raw)


def operator_get(cluster: LocalCluster, url: str, path: str) -> Answer:
    assert cluster.credentials is not None
    headers = signed_headers("GET", path, b"", OPERATOR, secret=cluster.credentials.token)
    return http("GET", url + path, headers=headers)


def map_of(cluster: LocalCluster) -> dict[str, Any]:
    for c in cluster.plan.coordinators:
        answer = http("GET", f"{c.url}/v1/map")
        if answer.status == 200:
            return answer.body
    raise AssertionError("no coordinator served the map")


def state_of(cluster: LocalCluster) -> dict[str, Any]:
    """The map (version, shards, nodes) and each node's data digest, as an operator sees
    them; waits until every member of a shard reports the same digest."""
    deadline = time.monotonic() + 20.0
    while True:
        cluster_map = map_of(cluster)
        digests = {}
        for node in cluster.plan.nodes:
            answer = operator_get(cluster, node.url, "/v1/digest")
            assert answer.status == 200, f"digest of {node.id}: {answer}"
            digests[node.id] = answer.body["digest"]
        by_shard: dict[str, set[str]] = {}
        for node in cluster.plan.nodes:
            by_shard.setdefault(node.shard or "", set()).add(digests[node.id])
        if all(len(d) == 1 for d in by_shard.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    shape = {k: cluster_map[k] for k in ("version", "shards", "nodes")}
    return {"map_digest": hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest(),
            "map": shape, "data": digests}
