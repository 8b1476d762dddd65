"""Batch framing of ``/v1/rpc`` (cluster/rpc_batches.py): any list of frames round-trips,
whole and frame by frame, and anything that is not a batch is refused with a clear error."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkv.cluster import rpc_batches
from shardkv.cluster.errors import InvalidArgument
from shardkv.node.api.rpc_answers import frame_header

_atoms = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                   st.binary(max_size=64), st.text(max_size=16), st.floats(allow_nan=False))
_args = st.dictionaries(st.text(max_size=8), _atoms, max_size=4)
_frame = st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(max_size=10), _args).map(list)


def _packed(frames: list[list[object]]) -> list[bytes]:
    return [msgpack.packb(frame, use_bin_type=True) for frame in frames]


@settings(max_examples=200, deadline=None)
@given(st.lists(_frame, min_size=1, max_size=40))
def test_any_list_of_frames_round_trips(frames: list[list[object]]) -> None:
    packed = _packed(frames)
    batch = rpc_batches.join(packed)
    assert rpc_batches.frame_count(batch) == len(frames)
    assert rpc_batches.decode(batch) == frames
    assert rpc_batches.split(batch) == packed
    # The same bytes as packing the frames' objects in one array.
    assert batch == msgpack.packb(frames, use_bin_type=True)


@pytest.mark.parametrize("count", [1, 15, 16, 1000, rpc_batches.MAX_BATCH_FRAMES])
def test_every_array_header_width(count: int) -> None:
    frames = [[i, "get", {}] for i in range(count)]
    batch = rpc_batches.join(_packed(frames))
    assert batch == msgpack.packb(frames)
    assert rpc_batches.decode(batch) == frames


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_is_refused_or_is_an_array(data: bytes) -> None:
    """Random bytes either are a batch (an array, then checked frame by frame by the node) or
    are refused with InvalidArgument: never another exception."""
    for walk in (rpc_batches.decode, rpc_batches.split):
        try:
            frames = walk(data)
        except InvalidArgument:
            continue
        assert isinstance(frames, list)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "msgpack array of frames"),
    (msgpack.packb({"id": 1}), "msgpack array of frames"),
    (msgpack.packb(b"bytes"), "msgpack array of frames"),
    (b"\x92\x93\x01\xa3get", "not valid msgpack"),  # truncated
    (msgpack.packb([[1, "get", {}]]) + b"\x00", "not valid msgpack"),  # trailing bytes
    (b"\xdd" + struct.pack("!I", rpc_batches.MAX_BATCH_FRAMES + 1), "at most"),
    (b"\xdc\x00", "msgpack array of frames"),  # header cut short
])
def test_bad_batches_are_refused_with_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        rpc_batches.decode(data)


def test_split_refuses_bytes_after_the_last_frame() -> None:
    batch = msgpack.packb([[1, "get", {}]]) + b"\xc0"
    with pytest.raises(InvalidArgument, match="after its last frame"):
        rpc_batches.split(batch)


def test_a_batch_is_full_at_its_count_or_byte_bound() -> None:
    assert not rpc_batches.is_full(0, 0, rpc_batches.MAX_BATCH_BYTES * 2)  # a lone frame
    assert rpc_batches.is_full(rpc_batches.MAX_BATCH_FRAMES, 100, 10)
    assert not rpc_batches.is_full(rpc_batches.MAX_BATCH_FRAMES - 1, 100, 10)
    assert rpc_batches.is_full(1, rpc_batches.MAX_BATCH_BYTES - 10, 10)


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDKV_RPC_BATCH", raising=False)
    assert rpc_batches.protocols() == (rpc_batches.SUBPROTOCOL,)
    monkeypatch.setenv("SHARDKV_RPC_BATCH", "0")
    assert rpc_batches.protocols() == ()


@pytest.mark.parametrize(("length", "expected"), [
    (0, b"\x82\x00"), (125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"),
    (65535, b"\x82\x7e\xff\xff"), (65536, b"\x82\x7f" + struct.pack("!Q", 65536)),
])
def test_answer_frame_header_is_rfc6455(length: int, expected: bytes) -> None:
    """FIN + binary opcode, no mask bit, the length in 7, 7+16 or 7+64 bits."""
    assert frame_header(length) == expected
