"""The data plane outlives the control plane (issue 19), on real processes.

A local cluster (3 coordinators, 2 shards x 3 members). With two of the three coordinators
SIGKILLed, the coordinator leader among them, every shard keeps taking puts, compare-and-swaps
and strong gets (its primary is leased by its own shard's majority), and every answer is
consistent with one register per key. A primary cut off from its replicas (SIGSTOP) while
the coordinators are down stops serving strong reads once the leases its replicas granted
can have run out. With the coordinators back, the map is as it was, nothing acknowledged is
lost, and a primary kill fails over again. The tests run in this order and share the cluster.

``SHARDKV_TEST_OUTAGE_S`` sets how long the coordinators stay down (30 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

import aiohttp
import pytest
from cluster_fixtures import (  # noqa: F401
    current_map,
    local_cluster_fixture,
    wait_until,
)
from shardkv.client import Client, Retry
from shardkv.client.cluster_status import collect_status
from shardkv.client.coordinator_quorum import probe_quorum
from shardkv.client.retry import ExponentialBackoff
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import ShardKVError
from shardkv.cluster.launcher import LocalCluster, http_get_json
from shardkv.cluster.ring import shard_for_key

pytestmark = [pytest.mark.integration]

OUTAGE_S = float(os.environ.get("SHARDKV_TEST_OUTAGE_S", "30"))
OP_TIMEOUT_S = 1.0  # an operation slower than this counts as unavailable
WARMUP_S = 1.0  # availability is judged after the first second of the outage


def key_of_shard(cmap: ClusterMap, shard: str, prefix: str) -> str:
    i = 0
    while shard_for_key(cmap, f"{prefix}{i}".encode()) != shard:
        i += 1
    return f"{prefix}{i}"


@dataclass
class Register:
    """One key written by one task: what a strong read may legally return."""

    key: str
    acknowledged: bytes | None = None
    version: int | None = None
    uncertain: set[bytes] = field(default_factory=set)  # writes whose outcome is unknown
    ok: int = 0
    failed: int = 0
    violations: list[str] = field(default_factory=list)

    def allowed(self) -> set[bytes | None]:
        return {self.acknowledged, *self.uncertain}


async def exercise(kv: Client, reg: Register, until: float, counting_from: float) -> None:
    """put, CAS, strong get in a loop; every answer is checked against the register."""
    i = 0
    while time.monotonic() < until:
        i += 1
        counted = time.monotonic() >= counting_from
        step = i % 3
        value = f"{reg.key}:{i}".encode()
        try:
            if step == 0:
                reg.uncertain.add(value)
                reg.version = await kv.put(reg.key, value, timeout=OP_TIMEOUT_S)
                reg.acknowledged, reg.uncertain = value, set()
            elif step == 1:
                if reg.version is None:
                    continue
                reg.uncertain.add(value)
                reg.version = await kv.put(reg.key, value, if_version=reg.version,
                                           timeout=OP_TIMEOUT_S)
                reg.acknowledged, reg.uncertain = value, set()
            else:
                item = await kv.get(reg.key, timeout=OP_TIMEOUT_S)
                got = item.value if item is not None else None
                if got not in reg.allowed():
                    reg.violations.append(f"read {got!r}, allowed {reg.allowed()!r}")
                elif item is not None:
                    reg.acknowledged, reg.version, reg.uncertain = got, item.version, set()
        except ShardKVError:
            if counted:
                reg.failed += 1
            reg.version = None if step == 1 else reg.version  # re-read before the next CAS
            continue
        if counted:
            reg.ok += 1


def kill_coordinator_majority(cluster: LocalCluster, cmap: ClusterMap) -> list[str]:
    """SIGKILL the leader and one more coordinator; returns their ids."""
    ids = [c.id for c in cluster.plan.coordinators]
    leader = cmap.leader if cmap.leader in ids else ids[0]
    victims = [leader, next(i for i in ids if i != leader)]
    for victim in victims:
        cluster.kill(victim)
    return victims


async def control_plane_changes_fail_fast(cluster: LocalCluster, victims: list[str]) -> None:
    """What needs the coordinators says so at once: a ring change and a failover asked of the
    surviving coordinator get a clear refusal naming the missing quorum, not a hang (the
    client's timeout here is a bound on "never answers", far above a refusal's time)."""
    survivor = next(c for c in cluster.plan.coordinators if c.id not in victims)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for method, path, body in (("POST", "/admin/shards", {}),
                                   ("POST", "/admin/shards/s1/failover", {})):
            async with http.request(method, f"{survivor.url}{path}", json=body,
                                    headers={"Accept": "application/json"}) as resp:
                answer = await resp.json(content_type=None)
                assert resp.status == 503, (path, resp.status, answer)
                assert answer["error"] == "UNAVAILABLE", (path, answer)
                assert "quorum" in answer["message"] or "leader" in answer["message"], (
                    path, answer)


async def restart_coordinators(cluster: LocalCluster, victims: list[str]) -> None:
    for victim in victims:
        cluster.restart(victim)

    async def quorum() -> bool:
        return (await probe_quorum(cluster.plan.coordinator_urls())).has_quorum

    await wait_until(quorum, within=60, interval=0.3, what="the coordinators' quorum")


async def caught_up_map(cluster: LocalCluster, version: int) -> ClusterMap:
    """The map once every coordinator serves at least ``version`` and a leader is known."""
    maps: list[ClusterMap] = []

    def every_coordinator_caught_up() -> bool:
        maps.clear()
        for c in cluster.plan.coordinators:
            status, body = http_get_json(f"{c.url}/v1/map")
            if status != 200 or not isinstance(body, dict):
                return False
            maps.append(ClusterMap.from_dict(body))
        return all(m.version >= version and m.leader for m in maps)

    await wait_until(every_coordinator_caught_up, within=60, interval=0.3,
                     what=f"every coordinator to serve map version {version}")
    return max(maps, key=lambda m: m.version)


async def test_shards_keep_serving_while_two_coordinators_are_down(
    local_cluster: LocalCluster,
) -> None:
    retry = Retry(ExponentialBackoff(base=0.02, cap=0.2), retries=50)
    async with Client(local_cluster.plan.coordinator_urls(), retry=retry,
                      timeout=OP_TIMEOUT_S) as kv:
        before = kv.cluster_map.copy()
        registers = [Register(key_of_shard(before, shard, f"cd-{shard}-{n}-"))
                     for shard in sorted(before.shards) for n in range(2)]
        for reg in registers:
            reg.version = await kv.put(reg.key, b"start", timeout=10)
            reg.acknowledged = b"start"
        victims = kill_coordinator_majority(local_cluster, before)
        started = time.monotonic()
        try:
            load = asyncio.gather(*(exercise(kv, reg, started + OUTAGE_S, started + WARMUP_S)
                                    for reg in registers))

            async def no_quorum_reported() -> bool:
                status = await collect_status(kv, within=1.0)
                return "coordinators: no quorum" in status["coordinators_line"]

            await wait_until(no_quorum_reported, within=15, interval=0.5,
                             what="status to report no coordinator quorum")
            await control_plane_changes_fail_fast(local_cluster, victims)
            for shard in before.shards.values():
                primary_url = before.node_url(shard.primary or "")
                status, body = http_get_json(f"{primary_url}/v1/replication")
                assert status == 200 and body["lease_detail"]["source"] == "majority", body
            await load
        finally:
            await restart_coordinators(local_cluster, victims)
        for reg in registers:
            assert reg.violations == [], (reg.key, reg.violations[:5])
            total = reg.ok + reg.failed
            assert total > 0
            assert reg.ok / total >= 0.99, (reg.key, reg.ok, reg.failed)
        # The map is as it was (once the restarted ones have caught up from the log), and
        # every last acknowledged value is there.
        after = await caught_up_map(local_cluster, before.version)
        assert after.version == before.version
        assert {s: (v.primary, v.epoch) for s, v in after.shards.items()} == {
            s: (v.primary, v.epoch) for s, v in before.shards.items()}
        for reg in registers:
            item = await kv.get(reg.key, timeout=10)
            assert item is not None and item.value in reg.allowed()


async def test_a_primary_cut_off_from_its_replicas_stops_strong_reads(
    local_cluster: LocalCluster,
) -> None:
    cmap = ClusterMap.from_dict(current_map(local_cluster))
    shard = cmap.shards["s1"]
    replicas = [m for m in shard.members if m != shard.primary]
    key = key_of_shard(cmap, "s1", "cut-")
    victims = kill_coordinator_majority(local_cluster, cmap)
    stopped: list[int] = []
    try:
        async with Client(local_cluster.plan.coordinator_urls(), timeout=OP_TIMEOUT_S) as kv:
            await kv.put(key, b"before-cut", timeout=10)
            for member in replicas:
                pid = local_cluster.pid_of(member)
                assert pid is not None
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            cut_at = time.monotonic()
            # The replicas' promises last one grant (about 2.4 s) from their last grant:
            # after that, with a drift margin, a strong read must not be served.
            await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - cut_at)))
            with pytest.raises(ShardKVError) as refused:
                await kv.get(key, timeout=OP_TIMEOUT_S)
            assert refused.value.code.value in ("UNAVAILABLE", "TIMEOUT")
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            stopped.clear()

            async def served_again() -> bool:
                with contextlib.suppress(ShardKVError):
                    item = await kv.get(key, timeout=OP_TIMEOUT_S)
                    return item is not None and item.value == b"before-cut"
                return False

            await wait_until(served_again, within=20, interval=0.2,
                             what="strong reads once the replicas grant again")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        await restart_coordinators(local_cluster, victims)


async def test_failover_works_again_once_the_coordinators_are_back(
    local_cluster: LocalCluster,
) -> None:
    retry = Retry(ExponentialBackoff(base=0.05, cap=0.5), retries=400)
    async with Client(local_cluster.plan.coordinator_urls(), retry=retry, timeout=60) as kv:
        key = key_of_shard(kv.cluster_map, "s2", "fo-back-")
        await kv.put(key, b"before-failover")  # the shard has a primary again by now...
        await kv.refresh_map()

        async def s2_has_primary() -> bool:  # ...and the client's map says which one
            await kv.refresh_map()
            return kv.cluster_map.shards["s2"].primary is not None

        await wait_until(s2_has_primary, within=60, interval=0.3, what="a primary for s2")
        before = kv.cluster_map.copy()
        local_cluster.kill(before.shards["s2"].primary)
        await kv.put(key_of_shard(before, "s2", "fo-after-"), b"after-failover")
        after = kv.cluster_map
        assert after.shards["s2"].primary != before.shards["s2"].primary
        assert after.shards["s2"].epoch > before.shards["s2"].epoch
        item = await kv.get(key)
        assert item is not None and item.value == b"before-failover"
    local_cluster.restart_dead()
