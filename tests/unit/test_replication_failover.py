"""The failover decision and the primary lease, with controlled clocks (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.cluster.cluster_map import ClusterMap, NodeInfo, ShardInfo
from shardkv.cluster.errors import StaleEpoch, Unavailable
from shardkv.coordinator.failover import (
    FailureDetector,
    MemberPosition,
    choose_successor,
    primary_is_dead,
    replicas_needed,
)
from shardkv.coordinator.liveness import Liveness
from shardkv.node.replication.lease import PrimaryLease, lease_for


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_replicas_needed_covers_every_majority() -> None:
    assert [replicas_needed(n) for n in (1, 2, 3, 4, 5)] == [0, 1, 2, 2, 3]


def test_the_most_up_to_date_replica_wins() -> None:
    positions = [MemberPosition("n2", 3, 90), MemberPosition("n3", 3, 120)]
    promotion = choose_successor("s1", ["n1", "n2", "n3"], "n1", 3, positions)
    assert promotion is not None
    assert (promotion.new_primary, promotion.epoch) == ("n3", 4)


def test_epoch_outranks_lsn_and_ties_go_to_the_lowest_id() -> None:
    positions = [MemberPosition("n3", 2, 500), MemberPosition("n2", 3, 10)]
    assert choose_successor("s1", ["n1", "n2", "n3"], "n1", 3, positions).new_primary == "n2"
    tied = [MemberPosition("n3", 3, 10), MemberPosition("n2", 3, 10)]
    assert choose_successor("s1", ["n1", "n2", "n3"], "n1", 3, tied).new_primary == "n2"


def test_too_few_answers_promote_nobody() -> None:
    # n2 alone might lack a write acknowledged by n1 and n3: never promote it.
    assert choose_successor("s1", ["n1", "n2", "n3"], "n1", 3,
                            [MemberPosition("n2", 3, 10)]) is None
    # Answers from outside the shard, or from the dead primary itself, do not count.
    assert choose_successor("s1", ["n1", "n2", "n3"], "n1", 3,
                            [MemberPosition("n1", 3, 99), MemberPosition("n9", 3, 99),
                             MemberPosition("n2", 3, 1)]) is None


def test_primary_death_needs_the_full_timeout() -> None:
    clock = Clock()
    liveness = Liveness(suspect_s=1, dead_s=10, grace_s=5, clock=clock)
    liveness.start_term()
    assert not primary_is_dead(liveness, "n1", 3)  # never heard, inside the grace period
    liveness.record("n1", 10, 1, "primary", 1)
    clock.now += 2.9
    assert not primary_is_dead(liveness, "n1", 3)
    clock.now += 0.2
    assert primary_is_dead(liveness, "n1", 3)
    clock.now += 10
    assert primary_is_dead(liveness, "n2", 3)  # never heard, grace over


def cluster(epoch: int = 1) -> ClusterMap:
    m = ClusterMap()
    m.shards["s1"] = ShardInfo(epoch=epoch, primary="n1", members=["n1", "n2", "n3"])
    for i in (1, 2, 3):
        m.nodes[f"n{i}"] = NodeInfo(url=f"http://node{i}", shard="s1",
                                    role="primary" if i == 1 else "replica")
    return m


async def test_detector_promotes_once_through_the_proposal() -> None:
    clock = Clock()
    liveness = Liveness(suspect_s=1, dead_s=10, grace_s=0, clock=clock)
    liveness.start_term()
    current = cluster()
    proposals: list[dict] = []

    async def propose(command: dict) -> dict:
        proposals.append(command)
        shard = current.shards[command["shard"]]
        if command["epoch"] <= shard.epoch:
            raise StaleEpoch("old", epoch=shard.epoch)
        shard.primary, shard.epoch = command["node"], command["epoch"]
        return {"epoch": command["epoch"]}

    positions = {"n2": MemberPosition("n2", 1, 40), "n3": MemberPosition("n3", 1, 41)}

    async def probe(node_id: str, url: str) -> MemberPosition | None:
        assert url == f"http://node{node_id[1]}"
        return positions.get(node_id)

    detector = FailureDetector(lambda: current, liveness, propose, probe, timeout_s=3,
                               clock=clock)
    for node in ("n1", "n2", "n3"):
        liveness.record(node, 40, 1, "x", 1)
    assert await detector.check_once() == []
    clock.now += 3.5
    for node in ("n2", "n3"):
        liveness.record(node, 41, 1, "replica", 1)
    done = await detector.check_once()
    assert [(p.new_primary, p.epoch) for p in done] == [("n3", 2)]
    assert proposals == [{"op": "set_primary", "shard": "s1", "node": "n3", "epoch": 2}]
    liveness.record("n3", 41, 2, "primary", 2)
    assert await detector.check_once() == []  # the new primary is alive: nothing more
    assert detector.failovers == 1 and detector.durations_s


async def test_detector_waits_when_a_replica_is_also_silent() -> None:
    clock = Clock()
    liveness = Liveness(suspect_s=1, dead_s=10, grace_s=0, clock=clock)
    liveness.start_term()
    current = cluster()

    async def propose(command: dict) -> dict:
        raise AssertionError("nothing may be promoted")

    async def probe(node_id: str, url: str) -> MemberPosition | None:
        return MemberPosition("n2", 1, 5) if node_id == "n2" else None

    detector = FailureDetector(lambda: current, liveness, propose, probe, timeout_s=3,
                               clock=clock)
    liveness.record("n1", 5, 1, "primary", 1)
    clock.now += 5
    assert await detector.check_once() == []
    assert detector.refused == 1


def test_lease_is_shorter_than_the_failover_timeout_with_drift() -> None:
    lease = lease_for(3.0, drift=0.05, margin_s=0.3)
    assert lease * 1.05 + 0.3 <= 3.0 * 0.95 + 1e-9
    assert lease == pytest.approx(2.4286, abs=1e-3)
    with pytest.raises(ValueError):
        lease_for(0.2)


async def test_lease_runs_from_when_the_heartbeat_was_sent() -> None:
    clock = Clock()
    lease = PrimaryLease(2.0, clock=clock)
    assert lease.state == "none" and not lease.valid
    with pytest.raises(Unavailable):
        lease.check()
    sent = clock.now
    clock.now += 0.5  # the answer came back 500 ms later
    lease.renewed(sent)
    assert lease.valid and lease.remaining_s == pytest.approx(1.5)
    lease.renewed(sent - 1)  # an older heartbeat's late answer never shortens or extends it
    assert lease.remaining_s == pytest.approx(1.5)
    clock.now += 1.5
    assert lease.state == "expired"
    waiter = asyncio.create_task(lease.wait_valid())
    await asyncio.sleep(0)
    assert not waiter.done()
    lease.renewed(clock.now)
    await asyncio.wait_for(waiter, 5)
    lease.revoke()
    assert not lease.valid
    assert PrimaryLease.unbounded().valid
