"""A replicated shard for tests: one coordinator and three node processes (a primary and two
replicas), with the ``Shard`` handle the tests drive it through (``primary``, ``map``,
``replicating``, ``converged``), the ``shard`` fixture, a patient client and the waiting
helpers. Import the fixture by name: ``from replicated_shard import shard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import NodeFactory, NodeProcess
from shardkv.client import Client, Retry
from shardkv.client.retry import ExponentialBackoff
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.coordinator.local_group import LocalGroup

# Small WAL segments and no retained tail behind a snapshot, so that a snapshot really
# drops the log a returning replica would need (the snapshot test).
NODE_ENV = {"SHARDKV_TEST_ADMIN": "1", "SHARDKV_WAL_SEGMENT_BYTES": "65536",
            "SHARDKV_RETAIN_WAL_ENTRIES": "0", "SHARDKV_WRITE_TIMEOUT_S": "2"}


@dataclass
class Shard:
    coordinator_url: str
    nodes: list[NodeProcess]
    http: aiohttp.ClientSession

    async def map(self) -> ClusterMap:
        async with self.http.get(f"{self.coordinator_url}/v1/map") as resp:
            assert resp.status == 200
            return ClusterMap.from_dict(await resp.json())

    def by_id(self, cluster_map: ClusterMap, node_id: str) -> NodeProcess:
        url = cluster_map.node_url(node_id)
        return next(n for n in self.nodes if n.port and n.url == url)

    async def primary(self) -> tuple[str, NodeProcess, ClusterMap]:
        cluster_map = await self.map()
        primary_id = cluster_map.shards["s1"].primary
        assert primary_id is not None
        return primary_id, self.by_id(cluster_map, primary_id), cluster_map

    async def status(self, node: NodeProcess) -> dict[str, Any]:
        async with self.http.get(f"{node.url}/v1/replication",
                                 timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return await resp.json()

    async def digest(self, node: NodeProcess) -> dict[str, Any]:
        async with self.http.get(f"{node.url}/v1/digest") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def replicating(self, within: float = 30.0) -> str:
        """Wait until the primary streams to both replicas; returns the primary's id."""

        async def ready() -> str | None:
            try:
                primary_id, node, _ = await self.primary()
                status = await self.status(node)
            except (AssertionError, aiohttp.ClientError, TimeoutError, StopIteration):
                return None
            connected = [r for r in status.get("replicas", []) if r["connected"]]
            ok = status["role"] == "primary" and len(connected) == 2
            return primary_id if ok and status.get("lease") == "valid" else None

        return await until(ready, within, "the primary to stream to two replicas")

    async def converged(self, within: float = 30.0) -> dict[str, Any]:
        async def same() -> dict[str, Any] | None:
            try:
                digests = [await self.digest(n) for n in self.nodes if n.running]
            except (AssertionError, aiohttp.ClientError):
                return None
            if len({(d["digest"], d["applied_lsn"]) for d in digests}) == 1:
                return digests[0]
            return None

        return await until(same, within, "all members to hold the same state")


def async_value(condition: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A plain condition as the awaitable check ``until`` polls."""

    async def check() -> Any:
        return condition()

    return check


async def until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def replicated_shard(tmp_path: Path, node_factory: NodeFactory,
                           **node_options: Any) -> AsyncIterator[Shard]:
    """One coordinator and a shard of three nodes (``node_factory(**node_options)``, each
    pointed at the coordinator), replicating; stopped on exit."""
    group = LocalGroup(str(tmp_path / "coord"), size=1, init_shards=1, replication_factor=3)
    group.start_all()
    try:
        await group.wait_leader(timeout_s=30)
        url = group.members[0].url
        nodes = await asyncio.gather(*(
            asyncio.to_thread(node_factory, extra_args=["--coordinator", url], **node_options)
            for _ in range(3)))
        async with aiohttp.ClientSession() as http:
            shard = Shard(url, list(nodes), http)
            await shard.replicating()
            yield shard
    finally:
        group.stop_all()


@pytest.fixture
async def shard(tmp_path: Path, node_factory: NodeFactory) -> AsyncIterator[Shard]:
    async with replicated_shard(tmp_path, node_factory, env=NODE_ENV) as started:
        yield started


def patient_client(shard: Shard, **options: Any) -> Client:
    retry = Retry(ExponentialBackoff(base=0.05, cap=0.3), retries=400)
    return Client([shard.coordinator_url], retry=retry, timeout=20.0, **options)
