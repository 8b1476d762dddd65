"""The primary's sending side: the in-memory tail frames are cut from, the heartbeat timer,
and the window of unacknowledged frames per replica (node/replication/entry_tail.py,
heartbeat_timer.py, primary.py). The stream tests use replication_pair.py; every wait is a
condition with a deadline, and the timer runs on a fake loop clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from eventually import eventually
from replication_pair import StuckTarget, digest
from replication_pair import make_primary as make_primary
from replication_pair import make_replica as make_replica
from shardkv.node.replication import protocol as proto
from shardkv.node.replication.entry_tail import EntryTail, decode_payload, take_frame
from shardkv.node.replication.heartbeat_timer import HeartbeatTimer
from shardkv.node.replication.primary import OVERLAP_ENTRIES
from shardkv.node.replication.replica import ReplicationReplica
from shardkv.node.replication.replica_log import EngineReplicaLog
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry, payload_of


def entry(lsn: int, value: bytes = b"v") -> WalEntry:
    return WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"k%d" % lsn, value),), 1.0)


def lsns(payloads: list[bytes]) -> list[int]:
    return [decode_payload(p).lsn for p in payloads]


def filled(first: int, last: int, **limits: int) -> EntryTail:
    tail = EntryTail(limits.get("entries", 10_000), limits.get("nbytes", 1 << 30))
    for lsn in range(first, last + 1):
        assert tail.add(entry(lsn))
    return tail


def test_a_frame_is_the_same_whichever_end_it_is_cut_from() -> None:
    tail = filled(1, 2000)
    assert lsns(tail.frame_from(1998)) == [1998, 1999, 2000]  # near the right
    assert lsns(tail.frame_from(3)) == list(range(3, 3 + proto.MAX_ENTRIES_PER_FRAME))
    assert lsns(tail.frame_from(1200)) == list(range(1200, 1712))  # right, cut
    assert tail.frame_from(2001) == []
    assert tail.covers(1) and tail.covers(2001) and not tail.covers(0)


def test_a_frame_stops_at_the_byte_limit_and_the_tail_at_its_bounds() -> None:
    big = b"x" * (proto.MAX_BYTES_PER_FRAME // 3)
    tail = EntryTail(100, 1 << 30)
    for lsn in range(1, 6):
        tail.add(entry(lsn, big))
    assert lsns(tail.frame_from(1)) == [1, 2, 3]  # the third crosses the limit
    assert lsns(take_frame((entry(n, big) for n in range(1, 6)), 1)) == [1, 2, 3]
    small = filled(1, 50, entries=10)
    assert (small.first_lsn, small.last_lsn, len(small)) == (41, 50, 10)
    one = len(payload_of(entry(50)))  # keys k10..k50: one size
    by_bytes = filled(1, 50, nbytes=one * 5)
    assert len(by_bytes) == 5 and by_bytes.entry_at(46) == entry(46)


def test_a_gap_starts_the_tail_afresh_and_a_repeat_is_ignored() -> None:
    tail = filled(1, 5)
    assert not tail.add(entry(3))
    assert tail.add(entry(9))
    assert (tail.first_lsn, tail.last_lsn) == (9, 9) and tail.entry_at(5) is None


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.is_cancelled = when, callback, False

    def cancel(self) -> None:
        self.is_cancelled = True


class FakeLoop:
    """Just enough of a loop for the timer: a clock moved by hand and timers run by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        self.timers.append(FakeTimer(when, callback))
        return self.timers[-1]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t.when <= self.now and not t.is_cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()


def test_the_heartbeat_timer_fires_after_a_quiet_interval_only() -> None:
    loop = FakeLoop()
    wakeup = asyncio.Event()
    timer = HeartbeatTimer(loop, 0.1, wakeup)  # type: ignore[arg-type]
    for _ in range(5):  # frames every 60 ms: never quiet for 100 ms
        loop.advance(0.06)
        timer.sent()
        assert not timer.due and not wakeup.is_set()
    assert len(loop.timers) == 1  # re-armed when it fired early, not once per frame
    loop.advance(0.11)
    assert timer.due and wakeup.is_set()
    wakeup.clear()
    timer.sent()
    assert not timer.due
    loop.advance(0.11)
    assert timer.due and wakeup.is_set()
    timer.cancel()
    assert all(t.is_cancelled for t in loop.timers)


async def _stuck_replica(make_replica: Any, url: str) -> tuple[ReplicationReplica, StuckTarget]:
    """A synced replica "r1" whose appends wait until its ``StuckTarget`` is released."""
    held: list[StuckTarget] = []

    def wrap(target: EngineReplicaLog) -> StuckTarget:
        held.append(StuckTarget(target))
        return held[0]

    replica = await make_replica("r1", url, wrap=wrap)
    replica.start()
    await replica.wait_synced(10)
    return replica, held[0]


@pytest.mark.parametrize("window", [1, 2])
async def test_entries_wait_for_the_window_and_then_leave_in_one_frame(
        make_primary, make_replica, window: int) -> None:
    """With ``window`` frames out (1, or 2 the default: frame 1 is small), what arrives while
    the replica is stuck appending frame 1 leaves in one frame once it acknowledges."""
    primary = await make_primary(members=["p", "r1"], send_window=window)
    assert primary.repl.send_window == window
    replica, stuck = await _stuck_replica(make_replica, primary.url)
    await primary.write(1, commit=False)
    await asyncio.wait_for(stuck.entered.wait(), 10)  # frame 1 is being appended
    await primary.write(49, commit=False)
    await eventually(lambda: primary.repl.replicas()[0]["frames_sent"] == window)
    # Frame 2 (window 2) went out with what was there when it left; the rest waits for an ack.
    assert primary.repl.replicas()[0]["entries_sent"] < 50
    stuck.release.set()
    await primary.repl.wait_for_majority(50, 10)
    await eventually(lambda: replica.target.applied_lsn == 50)
    stats = primary.repl.replicas()[0]
    assert (stats["frames_sent"], stats["entries_sent"]) == (window + 1, 50)
    assert await digest(replica.target.engine) == await digest(primary.engine)


async def test_a_second_frame_waits_while_the_first_is_large(make_primary, make_replica) -> None:
    primary = await make_primary(members=["p", "r1"])
    assert primary.repl.send_window == 2
    first = OVERLAP_ENTRIES + 8
    await primary.write(first, commit=False)  # frame 1 will carry them all
    replica, stuck = await _stuck_replica(make_replica, primary.url)
    await asyncio.wait_for(stuck.entered.wait(), 10)
    await primary.write(50 - first, commit=False)
    # A window of two, but frame 1 is large: no second frame until it is acknowledged.
    assert primary.repl.replicas()[0]["frames_sent"] == 1
    stuck.release.set()
    await primary.repl.wait_for_majority(50, 10)
    await eventually(lambda: replica.target.applied_lsn == 50)
    stats = primary.repl.replicas()[0]
    assert (stats["frames_sent"], stats["entries_sent"]) == (2, 50)


async def test_a_window_of_one_still_commits_everything(make_primary, make_replica) -> None:
    primary = await make_primary(send_window=1)
    replicas = [await make_replica(n, primary.url) for n in ("r1", "r2")]
    for r in replicas:
        r.start()
    await primary.write(20)
    assert primary.repl.majority_lsn == 20
    for r in replicas:
        await eventually(lambda r=r: r.target.applied_lsn == 20)
    for stats in primary.repl.replicas():
        assert stats["entries_sent"] == 20 and 1 <= stats["frames_sent"] <= 20

