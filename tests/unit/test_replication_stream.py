"""WAL shipping end to end in one process (replication_pair.py): majority commits, stuck and
late replicas, snapshots, truncation of an old primary's suffix, fencing, reconnects and
staleness. Everything waited on is a condition with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio

import pytest
from eventually import eventually
from replication_pair import StuckTarget, digest
from replication_pair import make_primary as make_primary
from replication_pair import make_replica as make_replica
from shardkv.cluster.errors import Timeout, Unavailable
from shardkv.node.replication.replica import ReplicationReplica
from shardkv.node.replication.replica_log import EngineReplicaLog
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry


async def test_two_replicas_converge_and_majority_commits(make_primary, make_replica) -> None:
    primary = await make_primary()
    replicas = [await make_replica(n, primary.url) for n in ("r1", "r2")]
    for r in replicas:
        r.start()
    await primary.write(300)
    assert primary.repl.majority_lsn >= 300
    for r in replicas:
        await eventually(lambda r=r: r.target.applied_lsn == 300)
        assert await digest(r.target.engine) == await digest(primary.engine)
    stats = {s["node"]: s for s in primary.repl.replicas()}
    await eventually(lambda: all(s["acked_lsn"] == 300 for s in primary.repl.replicas()))
    assert set(stats) == {"r1", "r2"} and all(s["connected"] for s in stats.values())


async def test_no_majority_times_out_and_is_never_committed(make_primary, make_replica) -> None:
    primary = await make_primary()
    await primary.write(5, commit=False)
    with pytest.raises(Timeout):
        await primary.repl.wait_for_majority(5, 0.05)
    assert primary.repl.majority_lsn == 0
    replica = await make_replica("r1", primary.url)
    replica.start()
    await primary.repl.wait_for_majority(5, 10)  # one replica + the primary: 2 of 3
    assert primary.repl.majority_lsn == 5


async def test_single_member_shard_commits_alone(make_primary) -> None:
    primary = await make_primary(members=["p"])
    await primary.write(3)
    assert primary.repl.majority_lsn == 3


async def test_close_fails_pending_commits_as_unavailable(make_primary) -> None:
    primary = await make_primary()
    await primary.write(1, commit=False)
    waiting = asyncio.create_task(primary.repl.wait_for_majority(1, None))
    await asyncio.sleep(0)
    await primary.repl.close("deposed")
    with pytest.raises(Unavailable):
        await waiting


async def test_a_stuck_replica_never_blocks_writes(make_primary, make_replica) -> None:
    primary = await make_primary(tail_entries=16)
    stuck_target: list[StuckTarget] = []

    def wrap(target: EngineReplicaLog) -> StuckTarget:
        stuck_target.append(StuckTarget(target))
        return stuck_target[0]

    slow = await make_replica("r1", primary.url, wrap=wrap)
    fast = await make_replica("r2", primary.url)
    slow.start()
    fast.start()
    await slow.wait_synced(10)
    await primary.write(200)  # commits with the primary and r2
    assert primary.repl.majority_lsn == 200 and slow.target.applied_lsn == 0
    # Released, the slow one catches up from the WAL files: the tail holds only 16 entries.
    stuck_target[0].release.set()
    await eventually(lambda: slow.target.applied_lsn == 200)
    assert await digest(slow.target.engine) == await digest(primary.engine)


async def test_late_replica_catches_up_from_the_wal(make_primary, make_replica) -> None:
    primary = await make_primary(tail_entries=8)
    await primary.write(40, commit=False)
    replica = await make_replica("r1", primary.url)
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 40)
    await primary.repl.wait_for_majority(40, 10)


async def test_far_behind_replica_bootstraps_from_a_snapshot(make_primary, make_replica) -> None:
    primary = await make_primary()
    await primary.write(300, commit=False)
    meta = await primary.snapshot()
    await primary.wal.remove_before(meta.lsn)  # the entries a fresh replica needs are gone
    assert primary.wal.first_lsn > 1
    replica = await make_replica("r1", primary.url)
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 300)
    await primary.write(10)
    await eventually(lambda: replica.target.applied_lsn == 310)
    assert replica.snapshots_installed == 1
    assert await digest(replica.target.engine) == await digest(primary.engine)


async def test_old_primary_drops_its_unacknowledged_suffix(make_primary, make_replica) -> None:
    """A returning old primary: 10 shared entries (epoch 1), then 5 it wrote in epoch 1 that
    nobody acknowledged (never applied: the gate held them). The new primary has the 10 and
    started epoch 2 after them. The old one keeps the 10, drops the 5 and follows."""
    primary = await make_primary()
    await primary.write(10, commit=False)
    replica = await make_replica("old", primary.url, epoch=2)
    for entry in primary.wal.read_from(1):
        await replica.target.append([entry])
    stray = [WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"lost", b"x"),), 0.0)
             for lsn in range(11, 16)]
    await replica.target.wal.append_many(stray)  # logged, never applied
    primary.epoch = 2
    await primary.write(3, commit=False)  # 11..13 in epoch 2
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 13)
    assert replica.truncations == 1 and replica.snapshots_installed == 0
    assert [e.epoch for e in replica.target.wal.read_from(11)] == [2, 2, 2]
    assert await digest(replica.target.engine) == await digest(primary.engine)


async def test_diverged_applied_suffix_is_replaced_by_a_snapshot(
    make_primary, make_replica
) -> None:
    """A replica that applied entries of an epoch-1 history the new primary (epoch 2) never
    had cannot un-apply them: it is reseeded from a snapshot."""
    primary = await make_primary()
    primary.epoch = 2
    await primary.write(5, commit=False)
    replica = await make_replica("r1", primary.url, epoch=2)
    await replica.target.append([WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"x%d" % lsn,
                                                            b"y"),), 0.0) for lsn in (1, 2, 3)])
    replica.start()
    await eventually(lambda: replica.snapshots_installed == 1)
    await primary.write(2, commit=False)
    await eventually(lambda: replica.target.applied_lsn == 7)
    assert await digest(replica.target.engine) == await digest(primary.engine)


async def test_newer_epoch_fences_the_primary(make_primary, make_replica) -> None:
    newer: list[int] = []
    primary = await make_primary(on_newer_epoch=newer.append)
    await primary.write(2, commit=False)
    replica = await make_replica("r1", primary.url, epoch=5)
    replica.start()
    await eventually(lambda: bool(newer))
    assert newer[0] == 5 and replica.target.applied_lsn == 0
    await eventually(lambda: replica.last_error is not None and "StaleEpoch" in replica.last_error)


async def test_replica_reconnects_and_resumes(make_primary, make_replica) -> None:
    primary = await make_primary()
    replica = await make_replica("r1", primary.url)
    replica.start()
    await primary.write(20)
    await eventually(lambda: replica.target.applied_lsn == 20)
    replica.retarget(primary.url, 2)  # a new epoch: a fresh handshake
    primary.epoch = 2
    await eventually(lambda: replica.handshakes >= 2)
    await primary.write(5)
    await eventually(lambda: replica.target.applied_lsn == 25)
    assert replica.snapshots_installed == 0 and replica.truncations == 0


async def test_staleness_follows_heartbeats_not_writes(make_primary, make_replica) -> None:
    primary = await make_primary()
    replica = await make_replica("r1", primary.url)
    replica.start()
    await primary.write(3)
    await eventually(lambda: replica.target.applied_lsn == 3)
    # Idle: heartbeats keep it fresh (every 20 ms here), so a 1 s bound is always met.
    first = replica._fresh_at
    await eventually(lambda: replica._fresh_at != first)
    assert replica.is_fresh_within(1000)


def test_staleness_is_measured_from_when_the_primary_lsn_was_applied() -> None:
    now = [100.0]

    class Target:
        applied_lsn = 5
        last_lsn = 5
        last_epoch = 1

    replica = ReplicationReplica(Target(), node_id="r", primary_url=None, epoch=1,  # type: ignore[arg-type]
                                 clock=lambda: now[0])
    assert replica.staleness_ms() is None
    replica._saw_primary_at(5, 100.0)
    now[0] = 100.25
    assert replica.staleness_ms() == pytest.approx(250)
    replica._saw_primary_at(9, 100.25)  # the primary is at 9; we are not
    now[0] = 103.0
    assert replica.staleness_ms() == pytest.approx(3000)
    Target.applied_lsn = 9
    replica._applied_up_to(9)
    assert replica.staleness_ms() == pytest.approx(2750)


async def test_the_primary_s_ring_version_reaches_its_replicas(make_primary,
                                                                make_replica) -> None:
    """A replica's watch frames say at least its primary's ring (docs/watch.md): the stream
    carries it on entries and heartbeats, raised as the primary learns newer rings."""
    ring = [4]
    primary = await make_primary(ring_version=lambda: ring[0])
    replica = await make_replica("r1", primary.url)
    seen: list[int] = []
    replica.on_ring = seen.append
    replica.start()
    await primary.write(3)
    await eventually(lambda: replica.target.applied_lsn == 3)
    assert seen and set(seen) == {4}
    ring[0] = 6  # the node's map moved on (a flip): the next frames say so
    await primary.write(1)
    await eventually(lambda: seen[-1] == 6)
    assert seen == sorted(seen)
