"""The events of one entry, shared by every watch that sees them, and the frames made of them.

With W watches of one prefix, every applied entry used to become W lists of event dicts and
W encoded frames, one per session, identical but for nothing. Now the hub makes one
:class:`Batch` per entry for each distinct (filter, values, shard) and hands the same object
to every subscriber of that group (``watch_hub.py``); the batch encodes its events once per
wire format, on first use, and a frame holding that batch alone is cached whole, so a
session that is keeping up only sends bytes another session already made. A session that
fell behind takes several batches at once: its frame is assembled from the batches' encoded
events (a header and a join, no per-event encoding).

The bytes are exactly what ``pack`` / ``to_json`` of the frame's map give (same keys, same
order), so the wire protocol is unchanged (tests/unit/test_watch_shared_frames.py).
:func:`wire_frame` adds the WebSocket framing (RFC 6455, unmasked as a server sends): the
bytes a caught-up session writes to its socket straight from the hub (``live_sink.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack
from shardkv.cluster.wire import pack, to_json

# A frame made of one batch, by (json?, with WebSocket framing?, shard, ring_version).
FrameKey = tuple[bool, bool, str, int | None]

_WS_TEXT, _WS_BINARY = 0x81, 0x82  # FIN and the opcode: a whole text or binary message


@dataclass(slots=True, eq=False)
class Batch:
    """The events of one entry (never split across frames: the resume point is an entry).

    Shared read-only between subscribers: nothing may change ``events`` once the batch is
    offered."""

    version: int
    events: list[dict[str, Any]]
    size: int
    _packed: bytes | None = None
    _json: bytes | None = None
    _frames: dict[FrameKey, bytes | str] = field(default_factory=dict)

    def packed_events(self) -> bytes:
        """The events, each msgpack-encoded, back to back (an array's body)."""
        if self._packed is None:
            self._packed = b"".join(pack(e) for e in self.events)
        return self._packed

    def json_events(self) -> bytes:
        """The events as JSON, comma-separated (an array's body)."""
        if self._json is None:
            self._json = b",".join(to_json(e) for e in self.events)
        return self._json


def events_frame(shard: str, ring_version: int | None, batches: list[Batch], *,
                 as_json: bool) -> bytes | str:
    """The ``events`` frame of ``batches`` (oldest first; ``version`` is the last one's):
    msgpack bytes, or JSON text. A one-batch frame is built once per batch and key."""
    if len(batches) == 1:
        batch = batches[0]
        key = (as_json, False, shard, ring_version)
        frame = batch._frames.get(key)
        if frame is None:
            frame = _assemble(shard, ring_version, batches, as_json)
            batch._frames[key] = frame
        return frame
    return _assemble(shard, ring_version, batches, as_json)


def wire_frame(shard: str, ring_version: int | None, batch: Batch, *, as_json: bool) -> bytes:
    """The one-batch ``events`` frame as a whole WebSocket message, header and payload,
    built once per batch and key: what :func:`events_frame` gives, framed."""
    key = (as_json, True, shard, ring_version)
    wire = batch._frames.get(key)
    if wire is None:
        payload = events_frame(shard, ring_version, [batch], as_json=as_json)
        data = payload.encode() if isinstance(payload, str) else payload
        wire = ws_header(_WS_TEXT if as_json else _WS_BINARY, len(data)) + data
        batch._frames[key] = wire
    assert isinstance(wire, bytes)
    return wire


def ws_header(first: int, length: int) -> bytes:
    """A server's (unmasked) WebSocket frame header for a payload of ``length`` bytes."""
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def _assemble(shard: str, ring_version: int | None, batches: list[Batch],
              as_json: bool) -> bytes | str:
    head = {"type": "events", "shard": shard, "version": batches[-1].version,
            "ring_version": ring_version}
    if as_json:
        body = b",".join(part for b in batches if (part := b.json_events()))
        # to_json(head) ends with "}": the events go in its place, as the map's last key.
        return (to_json(head)[:-1] + b',"events":[' + body + b"]}").decode()
    count = sum(len(b.events) for b in batches)
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(head) + 1)]
    for name, value in head.items():
        parts.append(packer.pack(name))
        parts.append(packer.pack(value))
    parts.append(packer.pack("events"))
    parts.append(packer.pack_array_header(count))
    parts.extend(b.packed_events() for b in batches)
    return b"".join(parts)
