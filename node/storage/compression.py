"""Value compression: zstd for values large enough to gain from it, raw bytes otherwise.

A value is stored (in the WAL, the engines and snapshots) together with a ``compressed`` flag,
so the choice is made once per write and never guessed at read time. Small values are left
alone (zstd's frame overhead and the CPU are not worth it below ~1 KiB), and so are values
that do not shrink by at least 10% (already compressed media, random bytes): those would cost
a decompression on every read for nothing.

zstandard's compressor and decompressor objects are not thread-safe, and values are encoded
both on the event loop and in worker threads (engines, snapshot writers), so each thread gets
its own pair (``threading.local``), created on first use and reused after. Frames carry zstd's
content checksum, so a damaged compressed value is an error, never wrong bytes.
"""

from __future__ import annotations

import threading

import zstandard
from shardkv.cluster.errors import InternalError
from shardkv.cluster.limits import HARD_MAX_VALUE_BYTES

LEVEL = 3
DEFAULT_THRESHOLD = 1024
MIN_SAVING = 0.10  # compress only when it saves at least this fraction

_local = threading.local()


class CorruptValue(InternalError):
    """A stored value flagged as compressed cannot be decompressed: the data is damaged."""


def _compressor() -> zstandard.ZstdCompressor:
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def encode_value(raw: bytes, threshold: int = DEFAULT_THRESHOLD) -> tuple[bytes, bool]:
    """``(stored bytes, compressed)``: zstd when ``raw`` is at least ``threshold`` bytes and
    compression saves at least 10%; ``raw`` itself otherwise."""
    if len(raw) < threshold:
        return raw, False
    packed = _compressor().compress(raw)
    if len(packed) <= len(raw) * (1 - MIN_SAVING):
        return packed, True
    return raw, False


def decode_value(data: bytes, compressed: bool) -> bytes:
    """The original bytes of a stored value. Raises ``CorruptValue`` (code INTERNAL) when a
    compressed value is damaged; never returns more than the hard value-size cap."""
    if not compressed:
        return data
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise CorruptValue(f"stored value is not a zstd frame: {exc}") from exc
    if size > HARD_MAX_VALUE_BYTES:
        raise CorruptValue(f"stored value claims {size} bytes uncompressed")
    try:
        if size >= 0:
            out = _decompressor().decompress(data)
        else:  # no size in the frame (not written by us): bound the output anyway
            out = _bounded_decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptValue(f"stored value cannot be decompressed: {exc}") from exc
    if size >= 0 and len(out) != size:
        raise CorruptValue(f"stored value decompressed to {len(out)} bytes, not {size}")
    return out


def _bounded_decompress(data: bytes) -> bytes:
    chunks: list[bytes] = []
    total = 0
    with _decompressor().stream_reader(data) as reader:
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if total > HARD_MAX_VALUE_BYTES:
                raise CorruptValue(
                    f"stored value decompresses to over {HARD_MAX_VALUE_BYTES} bytes"
                )
            chunks.append(chunk)
    return b"".join(chunks)
