"""The watch hub and a subscriber's bounded buffer: order, the history/live boundary, no
entry twice, overflow (the SLOW_CONSUMER condition), and closing."""

from __future__ import annotations

import asyncio

from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.watch.subscriber import Subscriber
from shardkv.node.watch.watch_filter import WatchFilter
from shardkv.node.watch.watch_hub import WatchHub


def put(lsn: int, key: bytes, value: bytes = b"v") -> WalEntry:
    return WalEntry(lsn, 1, (Mutation(MutationKind.PUT, key, value),))


def subscriber(after: int, **bounds: int) -> Subscriber:
    return Subscriber(WatchFilter.parse(prefix="a"), "s1", True, after=after, **bounds)


async def test_live_events_in_order_after_the_boundary_only() -> None:
    hub = WatchHub(published_lsn=5)
    sub = subscriber(hub.published_lsn)
    hub.subscribe(sub)
    hub.publish(put(6, b"a1"))
    hub.publish(put(7, b"b1"))  # not watched, but covered
    hub.publish(put(8, b"a2"))
    hub.publish(put(8, b"a2"))  # offered twice: taken once
    batches, covered = sub.take()
    assert covered == 8
    assert [(b.version, [e["key"] for e in b.events]) for b in batches] == [
        (6, [b"a1"]), (8, [b"a2"])]
    assert sub.covered == 8 and hub.published_lsn == 8
    assert sub.take() == ([], 8)
    hub.publish(put(9, b"b2"))
    assert sub.take() == ([], 9)


async def test_a_subscriber_ahead_of_the_hub_skips_what_it_already_has() -> None:
    hub = WatchHub(published_lsn=3)
    sub = subscriber(after=6)  # the client resumed from 6, the node had applied only 3
    hub.subscribe(sub)
    for lsn in range(4, 9):
        hub.publish(put(lsn, b"a"))
    assert [b.version for b in sub.take()[0]] == [7, 8]


async def test_overflow_drops_the_buffer_and_marks_the_subscriber() -> None:
    hub = WatchHub(published_lsn=0)
    sub = subscriber(0, max_events=16)
    hub.subscribe(sub)
    for lsn in range(1, 17):
        hub.publish(put(lsn, b"a"))
    assert not sub.overflowed and sub.buffered_events == 16
    hub.publish(put(17, b"a"))
    assert sub.overflowed and sub.buffered_events == 0 and sub.take()[0] == []
    hub.publish(put(18, b"a"))  # nothing more is buffered once overflowed
    assert sub.buffered_events == 0


async def test_the_byte_bound_counts_values() -> None:
    sub = subscriber(0, max_bytes=1 << 16)
    sub.offer(put(1, b"a", b"x" * 40_000))
    assert not sub.overflowed
    sub.offer(put(2, b"a", b"x" * 40_000))
    assert sub.overflowed


async def test_wait_wakes_on_offer_and_on_close() -> None:
    hub = WatchHub(published_lsn=0)
    sub = subscriber(0)
    hub.subscribe(sub)
    waiter = asyncio.create_task(sub.wait(60))
    await asyncio.sleep(0)
    hub.publish(put(1, b"a"))
    await asyncio.wait_for(waiter, 30)
    sub.take()
    waiter = asyncio.create_task(sub.wait(60))
    await asyncio.sleep(0)
    hub.reset(1, "snapshot installed")
    await asyncio.wait_for(waiter, 30)
    assert sub.closed_reason == "snapshot installed" and len(hub) == 0


async def test_a_replica_hub_follows_its_primary_commit_point() -> None:
    hub = WatchHub(published_lsn=5)
    sub = subscriber(hub.published_lsn)
    hub.subscribe(sub)
    assert hub.commit_limit is None  # a primary: no limit
    hub.commit(9)
    assert hub.commit_limit is None  # only a replica's hub follows a commit point
    hub.follow_commit(3)  # became a replica
    assert hub.commit_limit == 3
    sub.take()
    waiting = asyncio.create_task(sub.wait(5.0))
    await asyncio.sleep(0)
    hub.commit(7)  # raised: the session is woken to send what it held
    await asyncio.wait_for(waiting, 1.0)
    assert hub.commit_limit == 7
    hub.commit(6)  # never lowered
    hub.follow_commit(2)  # still a replica: keeps what it knows
    assert hub.commit_limit == 7
    hub.follow_commit(None)  # became primary
    assert hub.commit_limit is None
