"""Batched ``/v1/rpc`` messages: many request (or answer) frames in one WebSocket message.

Every WebSocket message costs both ends more than the few dozen bytes of a put's frame: a
frame header (and, from the client, a mask over a copy of the payload), a place in aiohttp's
reader queue, one ``receive()`` step and one msgpack decode. Under load a client has tens of
requests per loop iteration and a node tens of answers, so each side sends them as one
message: a msgpack array of frames, ``[[id, op, args], ...]`` one way and
``[[id, status, result], ...]`` the other. Each frame inside is exactly today's frame.

Both ends must agree, through the standard WebSocket subprotocol handshake: the client offers
``SUBPROTOCOL`` and batches only if the node selected it. An old node selects nothing and an
old client offers nothing, and both keep one frame per message, so a rolling upgrade mixes
versions freely. ``SHARDKV_RPC_BATCH=0`` turns batching off at either end (read when a
connection is made), for A/B runs on one checkout.

Bounds. A batch message holds at most ``MAX_BATCH_FRAMES`` frames and, unless it is a single
frame, at most ``MAX_BATCH_BYTES`` (``MAX_FRAME_BYTES``, what one frame could be before): a
sender flushes before a frame would cross either, so a batch never lets a client put more on
the wire per message than one frame could, and never more frames in memory at once than the
node's in-flight bound lets it serve in a few rounds.

Shared by the node and the client, which may not import each other: it lives on the floor.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
from shardkv.cluster.errors import InvalidArgument
from shardkv.cluster.limits import MAX_FRAME_BYTES

SUBPROTOCOL = "shardkv-rpc-batch.1"
MAX_BATCH_FRAMES = 1024
MAX_BATCH_BYTES = MAX_FRAME_BYTES
# The most an array header adds to the joined frames (0xdd + a 32-bit count).
HEADER_BYTES = 5


def enabled() -> bool:
    """Whether this process offers (client) or accepts (node) batching: on unless
    ``SHARDKV_RPC_BATCH=0``."""
    return os.environ.get("SHARDKV_RPC_BATCH", "1") != "0"


def protocols() -> tuple[str, ...]:
    """What to pass as ``protocols=`` to ``ws_connect`` or ``web.WebSocketResponse``."""
    return (SUBPROTOCOL,) if enabled() else ()


def is_full(count: int, size: int, frame_len: int) -> bool:
    """Whether a batch of ``count`` frames and ``size`` bytes must be sent before a frame of
    ``frame_len`` bytes is added to it (an empty batch takes any frame: a lone frame over the
    limits is the receiver's to refuse, as without batching)."""
    return count > 0 and (count >= MAX_BATCH_FRAMES
                          or size + frame_len + HEADER_BYTES > MAX_BATCH_BYTES)


def join(frames: list[bytes]) -> bytes:
    """One batch message of already-packed frames: an array header, then the frames as
    they are (cheaper than packing the frames' objects again in one array)."""
    count = len(frames)
    if count < 16:
        header = (0x90 | count).to_bytes(1, "big")
    elif count < 0x10000:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return header + b"".join(frames)


def frame_count(data: bytes) -> int:
    """The number of frames a batch message declares, read from its array header; raises
    ``InvalidArgument`` if it is not an array or declares more than ``MAX_BATCH_FRAMES``."""
    first = data[0] if data else -1
    if 0x90 <= first <= 0x9F:
        count = first & 0x0F
    elif first == 0xDC and len(data) >= 3:
        count = int.from_bytes(data[1:3], "big")
    elif first == 0xDD and len(data) >= 5:
        count = int.from_bytes(data[1:5], "big")
    else:
        raise InvalidArgument("a batch must be a msgpack array of frames [[id, op, args], ...]")
    if count > MAX_BATCH_FRAMES:
        raise InvalidArgument(f"a batch holds at most {MAX_BATCH_FRAMES} frames, not {count}")
    return count


def decode(data: bytes) -> list[Any]:
    """The frames of a batch, decoded in one call (each still to be checked as a frame).
    Raises ``InvalidArgument`` for anything that is not a well-formed batch."""
    frame_count(data)
    try:
        frames = msgpack.unpackb(data, strict_map_key=False, max_ext_len=0)
    except Exception:
        raise InvalidArgument("batch is not valid msgpack") from None
    if not isinstance(frames, list):  # pragma: no cover - the header said array
        raise InvalidArgument("a batch must be a msgpack array of frames")
    return frames


def split(data: bytes) -> list[bytes]:
    """The frames of a batch as their own bytes, undecoded: for a batch too large to decode
    whole, so that each frame is sized (and refused TOO_LARGE) on its own. Raises
    ``InvalidArgument`` if the batch cannot be walked frame by frame."""
    count = frame_count(data)
    unpacker = msgpack.Unpacker(max_buffer_size=len(data) or 1)
    unpacker.feed(data)
    frames: list[bytes] = []
    try:
        unpacker.read_array_header()
        start = unpacker.tell()
        for _ in range(count):
            unpacker.skip()
            end = unpacker.tell()
            frames.append(data[start:end])
            start = end
    except Exception:
        raise InvalidArgument("batch is not valid msgpack") from None
    if start != len(data):
        raise InvalidArgument("batch has bytes after its last frame")
    return frames
