"""Issue 18's repro with real processes (one coordinator, one shard of three nodes), through
the client library with its default retry policy.

The window: both replicas hold the next entries durably but have not acknowledged them
(failpoint ``replica_before_ack=pause``), so the primary cannot commit them, while a new
primary (a replica, which has them) will. An ``incr`` and a compare-and-swap are in flight in
that window when the primary changes:

- by a planned switchover (``POST /admin/shards/s1/failover``): the old primary answers the
  waiting writes ``OUTCOME_UNKNOWN`` (it used to say ``UNAVAILABLE``, "not done");
- by SIGKILL of the primary: the client loses the connection after sending.

A third test keeps the primary: it answers ``TIMEOUT`` (no majority within its write
timeout) and the client's retry, reaching the same primary while the first attempt is still
in flight, is answered from that attempt's record once acknowledgements flow.

Either way the client retries with the same session and the new primary answers from the
session record it received with the entry: the counter reads exactly 2 and the CAS is
reported as the success it was. Before sessions, the incr returned 3 and the CAS
``VERSION_MISMATCH``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from replicated_shard import (  # noqa: F401  (``shard`` is the fixture)
    NodeProcess,
    Shard,
    patient_client,
    shard,
    until,
)

pytestmark = pytest.mark.integration


async def set_failpoint(cluster: Shard, nodes: list[NodeProcess], action: bytes) -> None:
    for node in nodes:
        if not node.running:
            continue
        async with cluster.http.put(f"{node.url}/admin/failpoints/replica_before_ack",
                                    data=action) as resp:
            assert resp.status == 200, await resp.text()


async def last_lsn(cluster: Shard, node: NodeProcess) -> int:
    return int((await cluster.status(node))["last_lsn"])


async def roles(cluster: Shard) -> tuple[str, NodeProcess, list[str], list[NodeProcess]]:
    """(primary id, primary, replica ids, replicas) from the current map."""
    await cluster.replicating()
    primary_id, primary, cluster_map = await cluster.primary()
    ids = [m for m in cluster_map.shards["s1"].members if m != primary_id]
    return primary_id, primary, ids, [cluster.by_id(cluster_map, m) for m in ids]


async def in_flight(cluster: Shard, write: Any, primary: NodeProcess,
                    replicas: list[NodeProcess]) -> asyncio.Task:
    """Start ``write`` with acknowledgements paused; return once both replicas hold its
    entry durably (a replica holds one frame at the pause, so one write at a time)."""
    base = await last_lsn(cluster, primary)

    async def caught_up() -> bool:
        return all([await last_lsn(cluster, r) >= base for r in replicas])

    # A write is acknowledged by a majority, so one replica may still be receiving older
    # entries (a rejoined old primary catching up): paused on one of those, it would never
    # hold this write. Pause only replicas that hold everything before it.
    await until(caught_up, 15, "both replicas to hold every earlier write")
    await set_failpoint(cluster, replicas, b"pause")
    task = asyncio.create_task(write)

    async def held_by_replicas() -> bool:
        if await last_lsn(cluster, primary) < base + 1:
            return False
        return all([await last_lsn(cluster, r) >= base + 1 for r in replicas])

    await until(held_by_replicas, 15, "both replicas to hold the in-flight write")
    assert not task.done()  # not committed: nobody acknowledged it
    return task


async def switch_over(cluster: Shard, write: Any) -> Any:
    """Switch to a replica while ``write`` is in flight; the write's answer."""
    _, primary, ids, replicas = await roles(cluster)
    task = await in_flight(cluster, write, primary, replicas)
    try:
        async with cluster.http.post(f"{cluster.coordinator_url}/admin/shards/s1/failover",
                                     json={"target": ids[0]}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["primary"] == ids[0]
    finally:
        await set_failpoint(cluster, replicas, b"off")
    return await asyncio.wait_for(task, 30)


async def kill_primary(cluster: Shard, write: Any) -> Any:
    """SIGKILL the primary while ``write`` is in flight; the write's answer. The old
    primary is restarted (it rejoins as a replica) once the answer is in."""
    old_id, primary, _, replicas = await roles(cluster)
    task = await in_flight(cluster, write, primary, replicas)
    try:
        primary.kill()
    finally:
        await set_failpoint(cluster, replicas, b"off")
    answer = await asyncio.wait_for(task, 30)
    assert (await cluster.map()).shards["s1"].primary not in (None, old_id)
    await asyncio.to_thread(primary.start)
    return answer


async def check_both(cluster: Shard, change: Any) -> None:
    """An incr, then a compare-and-swap, each in flight across a primary change."""
    async with patient_client(cluster) as kv:
        assert await kv.incr("counter") == 1
        assert await change(cluster, kv.incr("counter")) == 2  # one call, one increment
        assert (await kv.get("counter")).value == b"2"
        version = await kv.put("cas", b"before")
        cas_version = await change(cluster, kv.put("cas", b"after", if_version=version))
        item = await kv.get("cas")  # reported as the success it was
        assert item.value == b"after" and item.version == cas_version
        assert (await kv.get("counter")).value == b"2"
    await cluster.replicating()
    await cluster.converged()


async def metric(cluster: Shard, node: NodeProcess, prefix: str) -> float:
    """The sum of the samples of ``node``'s metric lines starting with ``prefix``."""
    async with cluster.http.get(f"{node.url}/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


async def test_a_timed_out_write_retried_on_the_same_primary_applies_once(
    shard: Shard,  # noqa: F811
) -> None:
    """TIMEOUT for real: the primary cannot reach a majority within its write timeout (2 s
    here), answers TIMEOUT, and the client's retry reaches the same primary while the first
    attempt is still in flight. The retry waits on the first attempt's record and answers
    its result once acknowledgements flow again."""
    _, primary, _, replicas = await roles(shard)
    async with patient_client(shard) as kv:
        assert await kv.incr("counter") == 1
        try:
            incr = await in_flight(shard, kv.incr("counter"), primary, replicas)

            async def timed_out() -> bool:
                return await metric(shard, primary,
                                    'shardkv_ops_total{op="incr",outcome="TIMEOUT"}') >= 1

            await until(timed_out, 15, "the primary to answer TIMEOUT")
        finally:
            await set_failpoint(shard, replicas, b"off")
        assert await asyncio.wait_for(incr, 30) == 2
        assert (await kv.get("counter")).value == b"2"
    assert await metric(shard, primary, "shardkv_dedup_hits") >= 1


async def test_switchover_with_unacknowledged_writes_applies_each_once(shard: Shard) -> None:  # noqa: F811
    await check_both(shard, switch_over)


async def test_sigkill_with_unacknowledged_writes_applies_each_once(shard: Shard) -> None:  # noqa: F811
    await check_both(shard, kill_primary)
