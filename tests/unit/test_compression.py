"""Value compression: when values are compressed, round trips, damage, and threads."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkv.cluster.errors import ErrorCode
from shardkv.node.storage.compression import CorruptValue, decode_value, encode_value

TEXT = b"the quick brown fox jumps over the lazy dog; " * 100


def test_a_compressible_value_over_the_threshold_is_compressed() -> None:
    stored, compressed = encode_value(TEXT)
    assert compressed
    assert len(stored) < len(TEXT) // 10
    assert decode_value(stored, compressed) == TEXT


def test_a_value_under_the_threshold_stays_raw() -> None:
    value = TEXT[:1023]
    assert encode_value(value) == (value, False)
    assert encode_value(value, threshold=512)[1] is True
    assert encode_value(TEXT[:1024])[1] is True


def test_incompressible_values_stay_raw() -> None:
    noise = os.urandom(64 << 10)
    assert encode_value(noise) == (noise, False)


def test_the_ten_percent_rule() -> None:
    """Mix random and repeated bytes to sit just above and just below a 10% saving."""
    rng = random.Random(7)

    def half_random(repeated_fraction: float) -> bytes:
        size = 20_000
        repeated = int(size * repeated_fraction)
        return bytes(rng.getrandbits(8) for _ in range(size - repeated)) + b"a" * repeated

    saving_little = half_random(0.05)  # saves ~5%: not worth it
    saving_enough = half_random(0.20)  # saves ~20%
    assert encode_value(saving_little) == (saving_little, False)
    stored, compressed = encode_value(saving_enough)
    assert compressed and len(stored) <= 0.9 * len(saving_enough)
    assert decode_value(stored, True) == saving_enough


def test_raw_values_decode_as_themselves() -> None:
    assert (
        decode_value(b"\x28\xb5\x2f\xfd looks like zstd", False)
        == b"\x28\xb5\x2f\xfd looks like zstd"
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:-1],  # checksum cut
        lambda b: b[:20] + bytes([b[20] ^ 0x01]) + b[21:],  # one bit in the body
        lambda b: b"not zstd at all, just text",
        lambda b: b"",
    ],
    ids=["truncated", "last-byte", "bit-flip", "not-zstd", "empty"],
)
def test_a_damaged_compressed_value_is_a_clear_error(damage) -> None:  # type: ignore[no-untyped-def]
    stored, compressed = encode_value(TEXT + os.urandom(200))
    assert compressed
    with pytest.raises(CorruptValue) as caught:
        decode_value(damage(stored), True)
    assert caught.value.code is ErrorCode.INTERNAL
    assert "stored value" in caught.value.message


def test_a_frame_without_a_size_is_decoded_with_a_bound() -> None:
    chunker = zstandard.ZstdCompressor().compressobj()
    stored = chunker.compress(TEXT) + chunker.flush()
    assert zstandard.frame_content_size(stored) == -1
    assert decode_value(stored, True) == TEXT


def test_threads_each_use_their_own_compressor() -> None:
    values = [TEXT + str(i).encode() * 300 for i in range(200)]

    def round_trip(value: bytes) -> bool:
        stored, compressed = encode_value(value)
        return compressed and decode_value(stored, compressed) == value

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(round_trip, values * 4))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=8000), st.integers(min_value=0, max_value=4096))
def test_any_value_round_trips(value: bytes, threshold: int) -> None:
    stored, compressed = encode_value(value, threshold)
    assert decode_value(stored, compressed) == value
    if compressed:
        assert len(value) >= threshold and len(stored) <= 0.9 * len(value)
    else:
        assert stored == value
