"""Bounded eventual reads, deterministically: the three bugs the chaos harness found
(04a8c6c), each pinned with a fake clock instead of a partition and a wait.

1. A primary whose lease has run out (it may have been replaced while paused or cut off)
   must not vouch for ``max_staleness_ms``: ``TOO_STALE`` to a bounded read, ``UNAVAILABLE``
   to a strong one.
2. A node that is joining (placed nowhere yet, or a replica whose stream has not started)
   must answer ``TOO_STALE`` to a bounded read, not serve its empty state as fresh.
3. A replica's freshness is the primary's send time, not the frame's arrival: a heartbeat
   held up in transit (TCP retransmitting it after a partition heals) must not make the
   replica look fresh as of its arrival.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from shardkv.cluster.cluster_map import ROLE_NONE, ROLE_PRIMARY, ROLE_REPLICA
from shardkv.cluster.errors import NotPrimary, TooStale, Unavailable
from shardkv.cluster.timing import TimingContract
from shardkv.node.clock import NodeClock
from shardkv.node.replication import protocol as proto
from shardkv.node.replication.lease import PrimaryLease
from shardkv.node.replication.replica import ReplicationReplica
from shardkv.node.replication.shard_role import NodeReplication

BOUNDED = {"consistency": "eventual", "max_staleness_ms": 1000}
EVENTUAL = {"consistency": "eventual"}
STRONG: dict[str, Any] = {}


class FakeTime:
    """The real-time sources under a NodeClock, moved by hand."""

    def __init__(self) -> None:
        self.mono = 500.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def time_source() -> FakeTime:
    return FakeTime()


@pytest.fixture
def clock(time_source: FakeTime) -> NodeClock:
    return NodeClock(real_monotonic=lambda: time_source.mono, real_wall=lambda: time_source.wall)


def node(role: str, *, applied_lsn: int = 0) -> NodeReplication:
    """The read guard of a clustered node in ``role`` (no processes, no sockets)."""
    server = SimpleNamespace(
        ctx=SimpleNamespace(role=role, primary="http://127.0.0.1:1"),
        membership=object(),  # clustered
        store=SimpleNamespace(applied_lsn=applied_lsn),
        config=SimpleNamespace(timing=TimingContract()),
    )
    return NodeReplication(server)  # type: ignore[arg-type]


class Target:
    applied_lsn = 7
    last_lsn = 7
    last_epoch = 1


def replica_on(clock: NodeClock) -> ReplicationReplica:
    return ReplicationReplica(Target(), node_id="r1", primary_url=None, epoch=1,  # type: ignore[arg-type]
                              clock=clock.monotonic, wall_clock=clock.wall)


# -- 1. a primary with an expired lease ----------------------------------------------------


def test_a_primary_with_an_expired_lease_refuses_bounded_and_strong_reads(
    clock: NodeClock, time_source: FakeTime
) -> None:
    primary = node(ROLE_PRIMARY)
    primary.primary = object()  # type: ignore[assignment]  # it is serving as primary
    primary.lease = PrimaryLease(3.0, clock=clock.monotonic)
    primary.lease.renewed(clock.monotonic())
    for args in (BOUNDED, EVENTUAL, STRONG):
        primary.check_read(args)  # valid lease: everything is answered

    time_source.advance(3.01)  # no heartbeat answered for longer than the lease
    assert not primary.lease.valid
    with pytest.raises(TooStale, match="lease has expired"):
        primary.check_read(BOUNDED)
    with pytest.raises(Unavailable, match="lease has expired"):
        primary.check_read(STRONG)
    primary.check_read(EVENTUAL)  # no bound asked: any state may be served


# -- 2. a joining node ---------------------------------------------------------------------


def test_a_node_not_yet_placed_refuses_a_bounded_read() -> None:
    joining = node(ROLE_NONE)
    with pytest.raises(TooStale):
        joining.check_read(BOUNDED)
    with pytest.raises(NotPrimary):
        joining.check_read(STRONG)
    joining.check_read(EVENTUAL)


def test_a_replica_whose_stream_has_not_started_refuses_a_bounded_read(
    clock: NodeClock,
) -> None:
    joining = node(ROLE_REPLICA)
    assert joining.replica is None
    with pytest.raises(TooStale):
        joining.check_read(BOUNDED)
    joining.replica = replica_on(clock)  # connecting, never in step yet
    with pytest.raises(TooStale):
        joining.check_read(BOUNDED)


# -- 3. a frame's age in transit -----------------------------------------------------------


def heartbeat(primary_lsn: int, sent_wall: float) -> dict[str, Any]:
    return proto.decode(proto.encode(proto.HEARTBEAT, primary_lsn=primary_lsn,
                                     commit_lsn=primary_lsn, ts=sent_wall))


async def test_a_heartbeat_delayed_in_transit_does_not_make_a_replica_fresh(
    clock: NodeClock, time_source: FakeTime
) -> None:
    guard = node(ROLE_REPLICA, applied_lsn=7)
    replica = guard.replica = replica_on(clock)
    replica._saw_primary_at(7, clock.monotonic())  # in step once
    time_source.advance(6.0)  # a partition: nothing arrives for 6 s
    with pytest.raises(TooStale):
        guard.check_read(BOUNDED)

    # The heal: a heartbeat the primary sent 5 s ago arrives now (TCP retransmission).
    await replica._handle(None, heartbeat(7, sent_wall=clock.wall() - 5.0))  # type: ignore[arg-type]
    assert replica.staleness_ms() == pytest.approx(5000)  # fresh as of the send, not arrival
    with pytest.raises(TooStale):
        guard.check_read(BOUNDED)

    await replica._handle(None, heartbeat(7, sent_wall=clock.wall()))  # type: ignore[arg-type]
    assert replica.staleness_ms() == pytest.approx(0)
    guard.check_read(BOUNDED)


async def test_a_primary_clock_ahead_counts_as_no_delay(
    clock: NodeClock, time_source: FakeTime
) -> None:
    replica = replica_on(clock)
    time_source.advance(1.0)
    await replica._handle(None, heartbeat(7, sent_wall=clock.wall() + 2.0))  # type: ignore[arg-type]
    assert replica.staleness_ms() == pytest.approx(0)  # never fresher than its arrival
