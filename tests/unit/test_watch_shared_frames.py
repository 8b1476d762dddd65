"""The shared fan-out path: an entry's events are made once per group of equal watches and
encoded once per wire format, the frames are byte for byte what encoding the frame's map
gives, and the per-watch bounds still cut off a slow consumer alone."""

from __future__ import annotations

import pytest
from shardkv.cluster.wire import pack, to_json, unpack
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.watch import event_frames
from shardkv.node.watch.event_frames import Batch, events_frame
from shardkv.node.watch.subscriber import Subscriber
from shardkv.node.watch.watch_filter import WatchFilter
from shardkv.node.watch.watch_hub import WatchHub

PREFIX = WatchFilter.parse(prefix="a")


def put(lsn: int, key: bytes, value: bytes = b"v") -> WalEntry:
    return WalEntry(lsn, 1, (Mutation(MutationKind.PUT, key, value),))


def watchers(hub: WatchHub, count: int, *, values: bool = True, **bounds: int
             ) -> list[Subscriber]:
    subs = [Subscriber(PREFIX, "s1", values, after=hub.published_lsn, **bounds)
            for _ in range(count)]
    for sub in subs:
        hub.subscribe(sub)
    return subs


def reference(batches: list[Batch], ring: int | None = 7) -> dict:
    """The frame's map, as the session built it before frames were shared."""
    return {"type": "events", "shard": "s1", "version": batches[-1].version,
            "ring_version": ring, "events": [e for b in batches for e in b.events]}


def test_one_batch_and_one_encoding_reach_every_watch_of_a_group(monkeypatch) -> None:
    packed: list[object] = []
    real_pack = event_frames.pack
    monkeypatch.setattr(event_frames, "pack", lambda obj: packed.append(obj) or real_pack(obj))
    hub = WatchHub(published_lsn=0)
    subs = watchers(hub, 50)
    hub.publish(put(1, b"a1"))
    taken = [sub.take()[0] for sub in subs]
    assert all(len(batches) == 1 and batches[0] is taken[0][0] for batches in taken)
    frames = [events_frame("s1", 7, batches, as_json=False) for batches in taken]
    assert all(frame is frames[0] for frame in frames)  # made once, sent 50 times
    assert len(packed) == 1  # the one event, encoded once
    assert frames[0] == pack(reference(taken[0]))


def test_json_and_msgpack_sessions_each_get_their_own_encoding() -> None:
    hub = WatchHub(published_lsn=0)
    sub = watchers(hub, 1)[0]
    hub.publish(WalEntry(1, 1, (Mutation(MutationKind.PUT, b"a1", b"text"),
                                Mutation(MutationKind.PUT, b"a2", b"\xff\xfe"),
                                Mutation(MutationKind.DELETE, b"a3"))))
    batches, _ = sub.take()
    binary = events_frame("s1", None, batches, as_json=False)
    text = events_frame("s1", None, batches, as_json=True)
    assert isinstance(binary, bytes) and isinstance(text, str)
    assert binary == pack(reference(batches, None))
    assert text == to_json(reference(batches, None)).decode()
    assert '"value":{"b64":"//4="}' in text  # not UTF-8: base64, as to_json does
    assert events_frame("s1", None, batches, as_json=True) is text  # each cached apart
    assert events_frame("s1", None, batches, as_json=False) is binary
    # A frame for another ring version is a new frame, not the cached one.
    assert unpack(events_frame("s1", 8, batches, as_json=False))["ring_version"] == 8


@pytest.mark.parametrize("as_json", [False, True])
def test_a_frame_of_several_batches_is_the_frame_of_their_events(as_json: bool) -> None:
    hub = WatchHub(published_lsn=0)
    sub = watchers(hub, 1)[0]
    hub.publish(put(1, b"a1", b"x"))
    hub.publish(put(2, b"b1"))  # not watched: no batch
    hub.publish(WalEntry(3, 1, (Mutation(MutationKind.PUT, b"a2", b"y"),
                                Mutation(MutationKind.PUT, b"a3", b"z"))))
    batches, covered = sub.take()
    assert [b.version for b in batches] == [1, 3] and covered == 3
    frame = events_frame("s1", 7, batches, as_json=as_json)
    expected = reference(batches)
    assert frame == (to_json(expected).decode() if as_json else pack(expected))


def test_watches_that_see_different_events_do_not_share() -> None:
    hub = WatchHub(published_lsn=0)
    full = watchers(hub, 2)
    bare = watchers(hub, 2, values=False)
    other = Subscriber(WatchFilter.parse(key="a1"), "s1", True, after=0)
    hub.subscribe(other)
    hub.publish(put(1, b"a1", b"x"))
    hub.publish(put(2, b"a2", b"y"))
    full_batches = [s.take()[0] for s in full]
    bare_batches = [s.take()[0] for s in bare]
    assert full_batches[0][0] is full_batches[1][0]
    assert bare_batches[0][0] is bare_batches[1][0]
    assert full_batches[0][0] is not bare_batches[0][0]
    assert full_batches[0][0].events[0]["value"] == b"x"
    assert "value" not in bare_batches[0][0].events[0]
    assert [(b.version, b.events[0]["key"]) for b in other.take()[0]] == [(1, b"a1")]
    for sub in [*full, *bare, other]:
        hub.unsubscribe(sub)
    assert len(hub) == 0 and not hub._groups


def test_a_slow_consumer_is_cut_off_alone() -> None:
    hub = WatchHub(published_lsn=0)
    readers = watchers(hub, 3, max_events=4)
    slow = watchers(hub, 1, max_events=4)[0]
    got: list[list[int]] = [[] for _ in readers]
    for lsn in range(1, 11):
        hub.publish(put(lsn, b"a"))
        for n, reader in enumerate(readers):  # these keep up
            got[n].extend(b.version for b in reader.take()[0])
    assert slow.overflowed and slow.take()[0] == []
    assert not any(r.overflowed for r in readers)
    assert got == [list(range(1, 11))] * 3
    hub.publish(put(11, b"a"))  # the cut-off one takes nothing more; the rest go on
    assert slow.buffered_events == 0
    assert all([b.version for b in r.take()[0]] == [11] for r in readers)


def test_a_subscriber_that_resumed_ahead_does_not_stop_its_group() -> None:
    hub = WatchHub(published_lsn=3)
    ahead = Subscriber(PREFIX, "s1", True, after=6)
    hub.subscribe(ahead)
    behind = watchers(hub, 1)[0]  # after=3
    for lsn in range(4, 9):
        hub.publish(put(lsn, b"a"))
    assert [b.version for b in ahead.take()[0]] == [7, 8]
    assert [b.version for b in behind.take()[0]] == [4, 5, 6, 7, 8]
