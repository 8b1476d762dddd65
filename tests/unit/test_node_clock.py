"""The node clock (node/clock.py): offsets, rates, resets, and what they do to a lease.

Every clock here reads a fake real time the test moves by hand, so nothing sleeps and every
figure is exact.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shardkv.cluster.errors import InvalidArgument
from shardkv.cluster.timing import DEFAULT_CLOCK_DRIFT
from shardkv.cluster.timing import DEFAULT_LEASE_MARGIN_S as DEFAULT_MARGIN_S
from shardkv.node.clock import NODE_CLOCK, NodeClock
from shardkv.node.membership.coordinator_link import CoordinatorLink
from shardkv.node.replication.lease import PrimaryLease, lease_for
from shardkv.node.replication.primary import ReplicationPrimary
from shardkv.node.replication.replica import ReplicationReplica
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.testing.clock_admin import parse_skew
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


class RealTime:
    """The real-time sources a NodeClock reads, moved by the test."""

    def __init__(self, monotonic: float = 5_000.0, wall: float = 1_700_000_000.0) -> None:
        self.mono = monotonic
        self.wall = wall

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def clock_on(real: RealTime) -> NodeClock:
    return NodeClock(real_monotonic=real.monotonic, real_wall=real.time)


def test_untouched_clock_reads_real_time_exactly() -> None:
    real = RealTime(monotonic=123.456789, wall=1_700_000_000.123456)
    clock = clock_on(real)
    assert clock.monotonic() == real.mono and clock.wall() == real.wall
    real.advance(0.1)
    assert clock.monotonic() == real.mono and clock.wall() == real.wall
    assert not clock.reading().skewed


def test_process_clock_is_real_time_when_not_skewed() -> None:
    before = time.monotonic()
    reading = NODE_CLOCK.monotonic()
    assert before <= reading <= time.monotonic()
    before_wall = time.time()
    wall = NODE_CLOCK.wall()
    assert before_wall <= wall <= time.time()


def test_wall_offset_moves_the_wall_clock_only() -> None:
    real = RealTime()
    clock = clock_on(real)
    clock.skew(offset_ms=1500)
    assert clock.wall() == pytest.approx(real.wall + 1.5)
    assert clock.monotonic() == real.mono
    clock.skew(offset_ms=-250)  # replaces the previous offset, does not add to it
    assert clock.wall() == pytest.approx(real.wall - 0.25)
    real.advance(10)
    assert clock.wall() == pytest.approx(real.wall - 0.25)
    assert clock.monotonic() == pytest.approx(real.mono)
    reading = clock.reading()
    assert reading.offset_ms == pytest.approx(-250) and reading.rate == 1.0
    assert reading.wall_error_ms == pytest.approx(-250) and reading.monotonic_error_ms == 0
    assert reading.skewed


def test_rate_applies_from_the_moment_it_is_set_and_is_continuous() -> None:
    real = RealTime()
    clock = clock_on(real)
    real.advance(3)
    mono, wall = clock.monotonic(), clock.wall()
    clock.skew(rate=2.0)
    assert clock.monotonic() == pytest.approx(mono) and clock.wall() == pytest.approx(wall)
    real.advance(10)
    assert clock.monotonic() == pytest.approx(mono + 20)
    assert clock.wall() == pytest.approx(wall + 20)
    mono, wall = clock.monotonic(), clock.wall()
    clock.skew(rate=0.5)  # a second change carries on from where the clocks are
    assert clock.monotonic() == pytest.approx(mono) and clock.wall() == pytest.approx(wall)
    real.advance(10)
    assert clock.monotonic() == pytest.approx(mono + 5)
    assert clock.wall() == pytest.approx(wall + 5)
    reading = clock.reading()
    assert reading.rate == 0.5 and reading.offset_ms == 0
    assert reading.wall_error_ms == pytest.approx((10 - 5) * 1000)
    assert reading.monotonic_error_ms == pytest.approx((10 - 5) * 1000)


def test_offset_and_rate_together() -> None:
    real = RealTime()
    clock = clock_on(real)
    clock.skew(offset_ms=-2000, rate=1.03)
    real.advance(100)
    assert clock.wall() == pytest.approx(real.wall - 2 + 3)
    assert clock.monotonic() == pytest.approx(real.mono + 3)
    clock.skew(offset_ms=0)  # the step is undone; the drift so far stays, as on a real host
    assert clock.wall() == pytest.approx(real.wall + 3)


def test_reset_returns_the_wall_clock_and_keeps_the_monotonic_gain() -> None:
    real = RealTime()
    clock = clock_on(real)
    clock.skew(offset_ms=60_000, rate=2.0)
    real.advance(5)
    mono = clock.monotonic()
    assert mono == pytest.approx(real.mono + 5)
    clock.reset()
    assert clock.wall() == real.wall  # jumps back to real time, exactly
    assert clock.monotonic() == pytest.approx(mono)  # never backwards
    real.advance(1)
    assert clock.monotonic() == pytest.approx(mono + 1)  # real rate again
    reading = clock.reading()
    assert not reading.skewed and reading.rate == 1.0 and reading.wall_error_ms == 0
    assert reading.monotonic_error_ms == pytest.approx(5000)


def test_reset_after_a_slow_clock_keeps_it_behind() -> None:
    real = RealTime()
    clock = clock_on(real)
    clock.skew(rate=0.5)
    real.advance(10)
    clock.reset()
    assert clock.monotonic() == pytest.approx(real.mono - 5)
    assert clock.wall() == real.wall


@pytest.mark.parametrize("change", [
    {"rate": 0}, {"rate": -1.0}, {"rate": math.nan}, {"rate": math.inf}, {"rate": "fast"},
    {"rate": True}, {"rate": 101}, {"offset_ms": math.nan}, {"offset_ms": -math.inf},
    {"offset_ms": "5"}, {"offset_ms": 500, "rate": 0},
])
def test_bad_values_are_refused_and_change_nothing(change: dict) -> None:
    real = RealTime()
    clock = clock_on(real)
    clock.skew(offset_ms=100, rate=1.01)
    real.advance(1)
    before = clock.reading()
    with pytest.raises(ValueError):
        clock.skew(**change)
    assert clock.reading() == before


Step = st.one_of(
    st.tuples(st.just("advance"), st.floats(0, 100, allow_nan=False)),
    st.tuples(st.just("rate"), st.floats(0.01, 100, allow_nan=False)),
    st.tuples(st.just("offset"), st.floats(-1e7, 1e7, allow_nan=False)),
    st.tuples(st.just("reset"), st.none()),
)


@given(st.lists(Step, max_size=40))
def test_monotonic_never_goes_backwards(steps: list) -> None:
    real = RealTime()
    clock = clock_on(real)
    last = clock.monotonic()
    for kind, value in steps:
        if kind == "advance":
            real.advance(value)
        elif kind == "rate":
            clock.skew(rate=value)
        elif kind == "offset":
            clock.skew(offset_ms=value)
        else:
            clock.reset()
        now = clock.monotonic()
        assert now >= last - 1e-9 * max(1.0, abs(last)), (kind, value)
        last = max(last, now)
    clock.reset()
    assert clock.wall() == real.wall


# ------------------------------------------------------------------------- the lease


def test_lease_under_a_fast_clock_ends_early_in_real_time() -> None:
    real = RealTime()
    clock = clock_on(real)
    lease = PrimaryLease(2.0, clock=clock.monotonic)
    clock.skew(rate=2.0)
    lease.renewed(clock.monotonic())
    real.advance(0.99)
    assert lease.valid
    real.advance(0.02)
    assert not lease.valid


def test_lease_under_a_slow_clock_outlives_its_duration() -> None:
    real = RealTime()
    clock = clock_on(real)
    lease = PrimaryLease(2.0, clock=clock.monotonic)
    clock.skew(rate=0.5)
    lease.renewed(clock.monotonic())
    real.advance(3.99)
    assert lease.valid and lease.remaining_s == pytest.approx(0.005)
    real.advance(0.02)
    assert not lease.valid


def test_wall_offset_does_not_touch_the_lease() -> None:
    real = RealTime()
    clock = clock_on(real)
    lease = PrimaryLease(2.0, clock=clock.monotonic)
    lease.renewed(clock.monotonic())
    for offset_ms in (3_600_000, -3_600_000):
        clock.skew(offset_ms=offset_ms)
        assert lease.valid and lease.remaining_s == pytest.approx(2.0)
    real.advance(2.01)
    assert not lease.valid


def test_rate_change_mid_lease_spends_the_rest_at_the_new_rate() -> None:
    real = RealTime()
    clock = clock_on(real)
    lease = PrimaryLease(2.0, clock=clock.monotonic)
    lease.renewed(clock.monotonic())
    real.advance(1.0)
    clock.skew(rate=2.0)
    assert lease.remaining_s == pytest.approx(1.0)  # continuity: nothing spent by the change
    real.advance(0.49)
    assert lease.valid
    real.advance(0.02)
    assert not lease.valid


def test_reset_after_a_fast_clock_does_not_extend_a_lease() -> None:
    """Were the monotonic clock put back to real time, a lease renewed on the fast clock
    would last its duration *plus* the gain: exactly what the reset must not do."""
    real = RealTime()
    clock = clock_on(real)
    lease = PrimaryLease(2.0, clock=clock.monotonic)
    clock.skew(rate=2.0)
    real.advance(5)  # 5 s gained
    lease.renewed(clock.monotonic())
    clock.reset()
    real.advance(2.01)
    assert not lease.valid


@pytest.mark.parametrize("rate", [1 / (1 + DEFAULT_CLOCK_DRIFT), 0.97, 1.0, 1.03, 1.05])
def test_lease_argument_holds_for_rates_within_the_assumed_drift(rate: float) -> None:
    """The node stops acknowledging within L(1 + rho) real seconds of sending a heartbeat,
    which with the margin is before the leader can promote (T(1 - rho))."""
    timeout = 3.0
    duration = lease_for(timeout)
    real = RealTime()
    clock = clock_on(real)
    clock.skew(rate=rate)
    lease = PrimaryLease(duration, clock=clock.monotonic)
    lease.renewed(clock.monotonic())
    bound = duration * (1 + DEFAULT_CLOCK_DRIFT)
    real.advance(bound + 1e-9)
    assert not lease.valid
    assert bound + DEFAULT_MARGIN_S <= timeout * (1 - DEFAULT_CLOCK_DRIFT) + 1e-9


def test_a_rate_beyond_the_assumed_drift_breaks_the_argument() -> None:
    """At half speed the lease is still held when the leader may already have promoted:
    the fault the argument's rho excludes, and what a drift beyond it must show."""
    timeout = 3.0
    real = RealTime()
    clock = clock_on(real)
    clock.skew(rate=0.5)
    lease = PrimaryLease(lease_for(timeout), clock=clock.monotonic)
    lease.renewed(clock.monotonic())
    real.advance(timeout)
    assert lease.valid


# ------------------------------------------------------------ the node reads its clock


@pytest.mark.parametrize(("part", "parameter", "reading"), [
    (PrimaryLease, "clock", NODE_CLOCK.monotonic),
    (CoordinatorLink, "clock", NODE_CLOCK.monotonic),  # stamps heartbeats for the lease
    (ReplicationReplica, "clock", NODE_CLOCK.monotonic),
    (ReplicationReplica, "wall_clock", NODE_CLOCK.wall),
    (ReplicationPrimary, "clock", NODE_CLOCK.wall),
    (ReplicationPrimary, "monotonic_clock", NODE_CLOCK.monotonic),
    (Store.open, "clock", NODE_CLOCK.wall),
])
def test_node_parts_read_the_process_clock_by_default(part: Callable[..., object],
                                                      parameter: str, reading: object) -> None:
    assert inspect.signature(part).parameters[parameter].default == reading


async def test_store_ttls_follow_the_process_wall_clock(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path, wal=WalOptions(fsync=FsyncPolicy.NEVER),
                         ttl_sweep_interval_s=0)
    store = await Store.open(config)
    try:
        await store.put(b"k", b"v", ttl=600)
        assert await store.get(b"k") is not None
        NODE_CLOCK.skew(offset_ms=601_000)
        try:
            assert await store.get(b"k") is None
        finally:
            NODE_CLOCK.reset()
        assert await store.get(b"k") is not None  # never swept: visible on real time again
    finally:
        await store.close()


# ------------------------------------------------------------------- the admin body


def test_admin_body_parsing() -> None:
    assert parse_skew(b'{"offset_ms": -1500}', "application/json") == {"offset_ms": -1500.0}
    assert parse_skew(b'{"rate": 1.02, "offset_ms": 3}', "application/json") == {
        "rate": 1.02, "offset_ms": 3.0}
    for body in (b"", b"{}", b"[1]", b"nope", b'{"rate": 0}', b'{"rate": -2}',
                 b'{"rate": NaN}', b'{"rate": null}', b'{"offset_ms": "5"}',
                 b'{"ofset_ms": 5}', b'{"rate": true}'):
        with pytest.raises(InvalidArgument):
            parse_skew(body, "application/json")
