"""Leases granted by the shard's majority (node/replication/majority_lease.py), on fake clocks.

Every node gets its own ``NodeClock`` over one fake real-time source, so a test can move real
time by hand and give each node a drifting rate; nothing here sleeps.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkv.cluster.errors import Unavailable
from shardkv.coordinator.failover import MemberPosition, choose_successor, still_leased
from shardkv.node.clock import NodeClock
from shardkv.node.replication.lease import PrimaryLease
from shardkv.node.replication.majority_lease import (
    LeasePromise,
    MajorityLease,
    ShardLease,
    usable_grant_s,
)

GRANT_S = 2.43
DRIFT = 0.05
MARGIN_S = 0.3
USABLE_S = usable_grant_s(GRANT_S, drift=DRIFT, margin_s=MARGIN_S)


class RealTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def node_clock(real: RealTime, rate: float = 1.0) -> NodeClock:
    clock = NodeClock(real_monotonic=real, real_wall=real)
    if rate != 1.0:
        clock.skew(rate=rate)
    return clock


class Node:
    """One shard member: its clock, its promise, its primary-side lease."""

    def __init__(self, node_id: str, real: RealTime, rate: float = 1.0) -> None:
        self.id = node_id
        self.clock = node_clock(real, rate)
        self.promise = LeasePromise(GRANT_S, clock=self.clock.monotonic)
        self.majority = MajorityLease(USABLE_S, self.promise, clock=self.clock.monotonic)


MEMBERS = ["a", "b", "c"]


def test_usable_grant_is_shorter_than_the_grant_and_must_be_positive() -> None:
    assert 0 < USABLE_S < GRANT_S
    assert USABLE_S == pytest.approx(GRANT_S * 0.95 / 1.05 - 0.3)
    with pytest.raises(ValueError, match="no usable lease"):
        usable_grant_s(0.2, drift=DRIFT, margin_s=MARGIN_S)


def test_a_majority_of_grants_makes_the_lease_and_it_runs_out_on_the_primarys_clock() -> None:
    real = RealTime()
    a, b = Node("a", real), Node("b", real)
    a.majority.begin(1, "a", MEMBERS)
    assert not a.majority.valid  # itself alone is one of three
    sent = a.clock.monotonic()
    assert b.promise.grant(1)
    a.majority.granted("b", sent)
    assert a.majority.valid and a.majority.grantors() == ["b"]
    real.now += USABLE_S - 0.01
    assert a.majority.valid
    real.now += 0.02
    assert not a.majority.valid


def test_a_later_grant_carries_the_lease_past_the_first_ones_end() -> None:
    # A grant does not recompute the cached expiry (one per acknowledgement would); the
    # read does once the clock passes it, and finds the later grant.
    real = RealTime()
    a = Node("a", real)
    a.majority.begin(1, "a", MEMBERS)
    a.majority.granted("b", a.clock.monotonic())
    assert a.majority.valid
    real.now += USABLE_S - 0.5
    a.majority.granted("b", a.clock.monotonic())
    real.now += 1.0  # past the first grant's end, within the second's
    assert a.majority.valid
    real.now += USABLE_S
    assert not a.majority.valid


def test_a_grant_for_a_send_time_from_the_future_is_ignored() -> None:
    real = RealTime()
    a = Node("a", real)
    a.majority.begin(1, "a", MEMBERS)
    a.majority.granted("b", a.clock.monotonic() + 5)
    assert not a.majority.valid


def test_a_single_member_shard_leases_itself() -> None:
    real = RealTime()
    a = Node("a", real)
    a.majority.begin(1, "a", ["a"])
    assert a.majority.valid


def test_revoke_drops_every_grant_until_the_next_epoch() -> None:
    real = RealTime()
    a = Node("a", real)
    a.majority.begin(1, "a", MEMBERS)
    a.majority.granted("b", a.clock.monotonic())
    a.majority.revoke()
    a.majority.granted("c", a.clock.monotonic())
    assert not a.majority.valid
    a.majority.begin(2, "a", MEMBERS)
    a.majority.granted("c", a.clock.monotonic())
    assert a.majority.valid


def test_the_promise_blocks_a_newer_epoch_until_it_runs_out() -> None:
    real = RealTime()
    b = Node("b", real)
    assert b.promise.grant(1)
    assert b.promise.blocking_s(1) == 0  # the same primary: renewals are fine
    assert b.promise.blocking_s(2) == pytest.approx(GRANT_S)
    real.now += 1.0
    assert not b.promise.grant(2) and b.promise.refusals == 1
    assert b.promise.grant(1)  # renewed: the promise now runs GRANT_S from here
    real.now += GRANT_S - 0.001
    assert b.promise.blocking_s(2) > 0
    real.now += 0.002
    assert b.promise.blocking_s(2) == 0 and b.promise.grant(2)
    assert b.promise.to_dict()["epoch"] == 2


def test_a_fenced_primarys_release_voids_the_promise_to_its_epoch_only() -> None:
    real = RealTime()
    b = Node("b", real)
    assert b.promise.grant(1)
    b.promise.release(0)  # another epoch's release changes nothing
    assert b.promise.blocking_s(2) > 0
    b.promise.release(1)
    assert b.promise.blocking_s(2) == 0 and b.promise.grant(2)


def test_a_restarted_node_keeps_a_promise_it_may_have_made() -> None:
    real = RealTime()
    b = Node("b", real)
    b.promise.after_restart(stored_epoch=4)
    assert b.promise.blocking_s(4) == 0
    assert b.promise.blocking_s(5) == pytest.approx(GRANT_S)
    real.now += GRANT_S
    assert b.promise.blocking_s(5) == 0


def test_the_replicas_promise_prevents_an_early_promotion() -> None:
    """The edge the design rests on: the coordinators promote b (epoch 2) while the old
    primary a (epoch 1) still holds its majority lease through c's grant. b cannot count
    itself (it granted a too) nor c (c will not grant epoch 2) until a's lease is over."""
    real = RealTime()
    a, b, c = Node("a", real), Node("b", real), Node("c", real)
    a.majority.begin(1, "a", MEMBERS)
    sent = a.clock.monotonic()
    assert b.promise.grant(1) and c.promise.grant(1)
    a.majority.granted("b", sent)
    a.majority.granted("c", sent)
    real.now += 0.5
    b.majority.begin(2, "b", MEMBERS)  # promoted early: a is still leased
    assert not c.promise.grant(2)
    b.majority.granted("c", b.clock.monotonic())  # would be a bug to send; still refused
    b.majority.revoke()
    b.majority.begin(2, "b", MEMBERS)
    assert a.majority.valid and not b.majority.valid
    # Time passes; a's lease runs out strictly before either promise does.
    real.now += USABLE_S - 0.5
    assert not a.majority.valid
    assert not b.majority.valid and b.promise.blocking_s(2) > 0
    real.now += GRANT_S - USABLE_S
    assert c.promise.grant(2)
    b.majority.granted("c", b.clock.monotonic())
    assert b.majority.valid


def test_coordinator_lease_counts_only_once_the_epoch_was_established() -> None:
    real = RealTime()
    a = Node("a", real)
    lease = ShardLease(PrimaryLease(GRANT_S, clock=a.clock.monotonic), a.majority)
    a.majority.begin(1, "a", MEMBERS)
    lease.renewed(a.clock.monotonic())
    assert lease.source is None and not lease.valid  # fresh epoch: not established
    with pytest.raises(Unavailable):
        lease.check()
    a.majority.granted("b", a.clock.monotonic())
    assert lease.source == "majority" and a.majority.established
    real.now += USABLE_S + 0.01
    lease.renewed(a.clock.monotonic())
    assert lease.source == "coordinator" and lease.remaining_s == pytest.approx(GRANT_S)
    lease.revoke()
    assert not lease.valid and lease.state == "expired"


@settings(max_examples=120, deadline=None)
@given(
    rates=st.lists(st.floats(1 / (1 + DRIFT), 1 + DRIFT), min_size=3, max_size=3),
    delays=st.lists(st.floats(0.0, 2.0), min_size=2, max_size=2),
    promote_after=st.floats(0.0, 4.0),
)
def test_two_primaries_never_hold_a_majority_lease_at_once(
    rates: list[float], delays: list[float], promote_after: float,
) -> None:
    """Clocks drifting within the bound, frames delayed arbitrarily: once a is cut off after
    its last round, b (promoted at any moment) and a are never both leased."""
    real = RealTime()
    a, b, c = (Node(n, real, rate) for n, rate in zip(MEMBERS, rates, strict=True))
    a.majority.begin(1, "a", MEMBERS)
    sent = a.clock.monotonic()
    real.now += delays[0]
    b.promise.grant(1)
    real.now += delays[1]
    c.promise.grant(1)
    a.majority.granted("b", sent)
    a.majority.granted("c", sent)
    promoted_at = real.now + promote_after
    step = 0.02
    while real.now < promoted_at + GRANT_S * 1.2:
        if real.now >= promoted_at:
            if b.majority.epoch != 2:
                b.majority.begin(2, "b", MEMBERS)
            if c.promise.grant(2):
                b.majority.granted("c", b.clock.monotonic())
        assert not (a.majority.valid and b.majority.valid), real.now
        real.now += step
    assert b.majority.valid  # and b does get its lease in the end


def test_failover_waits_while_the_shard_still_leases_its_primary() -> None:
    leased = [MemberPosition("b", 1, 10, promised_s=1.2), MemberPosition("c", 1, 10)]
    assert still_leased(3, leased)
    assert choose_successor("s", MEMBERS, "a", 1, leased) is None
    free = [MemberPosition("b", 1, 10), MemberPosition("c", 1, 9)]
    promotion = choose_successor("s", MEMBERS, "a", 1, free)
    assert promotion is not None and promotion.new_primary == "b" and promotion.epoch == 2


def test_failover_waits_for_the_best_candidates_promise_in_a_larger_shard() -> None:
    members = ["a", "b", "c", "d", "e"]
    positions = [MemberPosition("b", 1, 12, promised_s=0.4), MemberPosition("c", 1, 10),
                 MemberPosition("d", 1, 10)]
    assert not still_leased(5, positions)  # one grant besides a's own is not a majority
    assert choose_successor("s", members, "a", 1, positions) is None  # b holds the newest
    positions[0] = MemberPosition("b", 1, 12)
    promotion = choose_successor("s", members, "a", 1, positions)
    assert promotion is not None and promotion.new_primary == "b"
