"""The hub writing caught-up watches' frames straight to their sockets (live_sink.py): one
message object for every watch of a group, in order with what the session buffered, and
declined (the batch buffered, the session woken) whenever the session's checks matter."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from shardkv.cluster.wire import to_json, unpack
from shardkv.node.api.node_context import NodeContext
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.watch.event_frames import ws_header
from shardkv.node.watch.live_sink import MAX_BUFFERED, LiveSink
from shardkv.node.watch.subscriber import Subscriber
from shardkv.node.watch.watch_filter import WatchFilter
from shardkv.node.watch.watch_hub import WatchHub


class Transport:
    """What the sink uses of an asyncio transport: what was written, and its backlog."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.backlog = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.backlog


def put(lsn: int, key: bytes = b"a", value: bytes = b"v") -> WalEntry:
    return WalEntry(lsn, 1, (Mutation(MutationKind.PUT, key, value),))


def setup(count: int, *, as_json: bool = False
          ) -> tuple[WatchHub, NodeContext, list[tuple[Subscriber, LiveSink, Transport]]]:
    hub = WatchHub(published_lsn=0)
    store: Any = SimpleNamespace(watch_hub=hub)
    ctx = NodeContext(store=store, ring_version=4)
    watches = []
    for _ in range(count):
        sub = Subscriber(WatchFilter.parse(prefix="a"), "s1", True, after=0)
        transport = Transport()
        ws: Any = SimpleNamespace(closed=False)
        sink = LiveSink(ws, cast(Any, transport), ctx, hub, "s1", lambda: ctx.ring_version,
                        as_json=as_json, sent=0)
        sub.sink = sink
        hub.subscribe(sub)
        watches.append((sub, sink, transport))
    return hub, ctx, watches


def payload(message: bytes) -> bytes:
    """The payload of one unmasked WebSocket message (the sink writes whole ones)."""
    length = message[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return message[start:]


def test_one_message_written_to_every_caught_up_watch() -> None:
    hub, _, watches = setup(20)
    hub.publish(put(1, b"a1", b"x"))
    hub.publish(put(2, b"b"))  # not watched: nothing written, covered moves
    messages = [t.written for _, _, t in watches]
    assert all(len(m) == 1 and m[0] is messages[0][0] for m in messages)
    frame = unpack(payload(messages[0][0]))
    assert frame == {"type": "events", "shard": "s1", "version": 1, "ring_version": 4,
                     "events": [{"type": "put", "key": b"a1", "version": 1,
                                 "prev_version": None, "shard": "s1", "value": b"x"}]}
    assert messages[0][0][0] == 0x82  # a whole binary message
    for sub, sink, _ in watches:
        assert sink.sent == 1 and sink.events_sent == 1
        assert sub.take() == ([], 2)  # nothing buffered; progress may say 2


def test_json_watches_get_text_messages_of_the_json_frame() -> None:
    hub, _, watches = setup(2, as_json=True)
    hub.publish(put(1, b"a1", b"\xff"))
    message = watches[0][2].written[0]
    assert message is watches[1][2].written[0] and message[0] == 0x81
    expected = to_json({"type": "events", "shard": "s1", "version": 1, "ring_version": 4,
                        "events": [{"type": "put", "key": b"a1", "version": 1,
                                    "prev_version": None, "shard": "s1", "value": b"\xff"}]})
    assert payload(message) == expected


def test_a_watch_whose_socket_lags_is_left_to_its_session_alone() -> None:
    hub, _, watches = setup(3)
    (slow, slow_sink, slow_transport) = watches[0]
    slow_transport.backlog = MAX_BUFFERED + 1
    hub.publish(put(1))
    slow_transport.backlog = 0  # the socket drained, but a batch is buffered: it goes first
    hub.publish(put(2))
    assert slow_transport.written == [] and slow_sink.sent == 0
    assert [b.version for b in slow.take()[0]] == [1, 2]
    hub.publish(put(3))  # buffer empty again: the sink takes over, after 1 and 2
    assert [unpack(payload(m))["version"] for m in slow_transport.written] == [3]
    for sub, sink, transport in watches[1:]:
        assert [unpack(payload(m))["version"] for m in transport.written] == [1, 2, 3]
        assert sub.take() == ([], 3) and sink.sent == 3


def test_the_sink_declines_when_the_session_must_check() -> None:
    hub, ctx, watches = setup(1)
    sub, sink, transport = watches[0]
    hub.follow_commit(0)  # became a replica: nothing above the commit limit goes out
    hub.publish(put(1))
    hub.follow_commit(None)
    ctx.role = "replica"
    hub.publish(put(2))
    ctx.role = "primary"
    transport.closing = True
    hub.publish(put(3))
    transport.closing = False
    sub.close("the client closed the watch")
    hub.publish(put(4))
    assert transport.written == [] and sink.sent == 0
    assert [b.version for b in sub.take()[0]] == [1, 2, 3, 4]


def test_a_failing_write_is_left_to_the_session() -> None:
    hub, _, watches = setup(2)

    def broken(data: bytes) -> None:
        raise RuntimeError("the handler is closed")

    watches[0][2].write = broken  # type: ignore[method-assign]
    hub.publish(put(1))  # the other watch still gets it from the hub
    assert [b.version for b in watches[0][0].take()[0]] == [1]
    assert len(watches[1][2].written) == 1


def test_ws_header_lengths() -> None:
    assert ws_header(0x82, 125) == bytes([0x82, 125])
    assert ws_header(0x82, 126) == bytes([0x82, 126, 0, 126])
    assert ws_header(0x81, 1 << 16) == bytes([0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0])
