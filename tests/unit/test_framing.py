"""Record framing: layout, CRC chaining, and how damage of each kind is classified."""

from __future__ import annotations

import io

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkv.node.wal.framing import (
    ALIGN,
    HEADER_SIZE,
    DamageKind,
    FrameDamage,
    RecordType,
    encode_frame,
    find_intact_header,
    frame_size,
    read_frames,
)
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.segment import encode_entry


def encode_all(payloads: list[bytes]) -> tuple[bytes, list[int]]:
    """The bytes of records chained from 0, and each record's offset."""
    out, offsets, crc = b"", [], 0
    for payload in payloads:
        offsets.append(len(out))
        frame, crc = encode_frame(RecordType.ENTRY, payload, crc)
        out += frame
    return out, offsets


def decode(data: bytes, **kwargs: int) -> list[bytes]:
    return [frame.payload for frame in read_frames(io.BytesIO(data), **kwargs)]


def damage_of(data: bytes) -> FrameDamage:
    with pytest.raises(FrameDamage) as caught:
        decode(data)
    return caught.value


PAYLOADS = [b"a", b"", b"x" * 7, b"y" * 8, b"z" * 9, bytes(range(256)) * 3]


def test_round_trip_keeps_every_record_aligned_and_padded() -> None:
    data, offsets = encode_all(PAYLOADS)
    assert decode(data) == PAYLOADS
    assert all(offset % ALIGN == 0 for offset in offsets)
    assert len(data) == sum(frame_size(len(p)) for p in PAYLOADS)
    frames = list(read_frames(io.BytesIO(data)))
    assert [f.offset for f in frames] == offsets
    assert frames[-1].end == len(data)


def test_crc_is_chained_so_a_record_moved_elsewhere_fails() -> None:
    first, crc = encode_frame(RecordType.ENTRY, b"one", 0)
    second, _ = encode_frame(RecordType.ENTRY, b"two", crc)
    assert decode(first + second) == [b"one", b"two"]
    # Intact on its own, but out of place: its CRC was seeded by "one".
    damage = damage_of(second + first)
    assert damage.kind is DamageKind.CORRUPT
    assert damage.offset == 0
    assert "data checksum" in damage.reason


def test_decoding_from_the_middle_needs_the_chain_seed() -> None:
    data, offsets = encode_all([b"one", b"two", b"three"])
    frames = list(read_frames(io.BytesIO(data)))
    rest = read_frames(io.BytesIO(data), start=offsets[1], crc=frames[0].crc)
    assert [f.payload for f in rest] == [b"two", b"three"]


def test_empty_input_is_a_clean_end() -> None:
    assert decode(b"") == []


@pytest.mark.parametrize("cut", range(1, frame_size(5)))
def test_a_short_last_record_is_torn(cut: int) -> None:
    data, offsets = encode_all([b"first", b"last!"])
    damage = damage_of(data[: offsets[1] + cut])
    assert damage.kind is DamageKind.TORN
    assert damage.offset == offsets[1]


def test_zeros_at_the_end_are_torn() -> None:
    data, _ = encode_all([b"first"])
    damage = damage_of(data + bytes(4096))
    assert damage.kind is DamageKind.TORN
    assert damage.offset == len(data)
    assert "zeros" in damage.reason


def test_a_zero_header_followed_by_data_is_corruption() -> None:
    data, _ = encode_all([b"first"])
    damage = damage_of(data + bytes(HEADER_SIZE) + b"garbage!")
    assert damage.kind is DamageKind.CORRUPT
    assert damage.offset == len(data)


def test_a_flipped_length_bit_is_caught_by_the_header_checksum() -> None:
    data, offsets = encode_all([b"first", b"second", b"third"])
    broken = bytearray(data)
    broken[offsets[1]] ^= 0x40  # the length's low byte
    damage = damage_of(bytes(broken))
    assert damage.kind is DamageKind.CORRUPT
    assert damage.offset == offsets[1]
    assert "header checksum" in damage.reason


def test_a_flipped_payload_bit_is_a_data_checksum_mismatch() -> None:
    data, offsets = encode_all([b"first", b"second", b"third"])
    broken = bytearray(data)
    broken[offsets[1] + HEADER_SIZE + 2] ^= 0x01
    damage = damage_of(bytes(broken))
    assert (damage.kind, damage.offset) == (DamageKind.CORRUPT, offsets[1])
    assert "data checksum" in damage.reason


def test_non_zero_padding_is_corruption() -> None:
    data, offsets = encode_all([b"abc"])  # 3 bytes + 5 of padding
    broken = bytearray(data)
    broken[-1] = 1
    damage = damage_of(bytes(broken))
    assert (damage.kind, damage.offset) == (DamageKind.CORRUPT, offsets[0])


def test_limit_stops_reading_as_if_the_file_ended_there() -> None:
    data, offsets = encode_all([b"one", b"two", b"three"])
    assert decode(data, limit=offsets[2]) == [b"one", b"two"]
    assert decode(data + b"\x01\x02 half-written", limit=len(data)) == [b"one", b"two", b"three"]


def test_records_larger_than_the_read_chunk_decode() -> None:
    big = bytes(range(256)) * ((3 << 20) // 256)
    data, _ = encode_all([b"small", big, b"after"])
    assert decode(data) == [b"small", big, b"after"]


def test_find_intact_header_skips_zeros_and_garbage() -> None:
    data, offsets = encode_all([b"first", b"second"])
    assert find_intact_header(bytes(64) + b"\xff" * 64, 0) is None
    assert find_intact_header(bytes(64) + data, 1024) == 1024 + 64
    assert find_intact_header(data[offsets[1] :], offsets[1]) == offsets[1]


mutations = st.builds(
    Mutation,
    kind=st.sampled_from(MutationKind),
    key=st.binary(min_size=1, max_size=64),
    value=st.binary(max_size=3000),
    compressed=st.booleans(),
    expires_at=st.none() | st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
entries = st.builds(
    WalEntry,
    lsn=st.integers(min_value=1, max_value=2**63 - 1),
    epoch=st.integers(min_value=0, max_value=2**32),
    mutations=st.lists(mutations, max_size=5).map(tuple),
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(entries, min_size=1, max_size=8))
def test_arbitrary_entries_round_trip_through_framing(batch: list[WalEntry]) -> None:
    data, crc = b"", 0
    for entry in batch:
        frame, crc = encode_entry(entry, crc)
        assert len(frame) % ALIGN == 0
        data += frame
    decoded = [
        WalEntry.from_wire(msgpack.unpackb(frame.payload, raw=False))
        for frame in read_frames(io.BytesIO(data))
    ]
    assert decoded == batch


def test_every_single_bit_flip_is_caught_at_the_record_that_holds_it() -> None:
    """Exhaustive over a small file: no flipped bit ever decodes as data, and the damage is
    reported at the offset of the record the bit belongs to."""
    data, offsets = encode_all([b"alpha", b"", b"a longer payload of 29 bytes!", b"z" * 8])
    for position in range(len(data)):
        owner = max(o for o in offsets if o <= position)
        for bit in range(8):
            broken = bytearray(data)
            broken[position] ^= 1 << bit
            damage = damage_of(bytes(broken))
            assert damage.offset == owner, (position, bit)
            # The header checksum covers the length: a flip never passes for a short write.
            assert damage.kind is DamageKind.CORRUPT, (position, bit)
