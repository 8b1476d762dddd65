"""Record framing for WAL segments: how one record is laid out on disk and read back.

Every record is a 16-byte header, the payload, then zero padding to a multiple of 8 bytes::

    offset  size  field
    0       4     payload length (little endian)
    4       1     padding length (0..7)
    5       1     record type (RecordType)
    6       2     reserved, zero
    8       4     data CRC: CRC32C of the payload, chained from the previous record's CRC
    12      4     header CRC: CRC32C of bytes 0..11

Why this shape (after etcd's WAL, with one addition):

- Records start at 8-byte aligned offsets, so the first 8-byte word (length, padding, type) is
  never split across two disk sectors: a crash can tear a record's payload but not leave a
  half-written length that sends the reader into the middle of the next record.
- The data CRC is chained (each record's CRC is seeded with the previous one), so a record
  that is intact on its own but out of place (a stale block, a reordered write) is caught.
  Every segment starts its chain at 0 with a SEGMENT record that carries the last CRC of the
  previous segment, which links segments together (checked by the segment reader).
- The header CRC is our addition: it makes the length trustworthy. Without it a flipped bit in
  the length of a record in the middle of a file looks exactly like a short write at the end,
  and a reader would "repair" the file by dropping every record after it.

Decoding tells apart three endings (``FrameDamage.kind``): a clean end (the generator just
stops), a torn tail (``TORN``: the file ends inside a record, or everything from the record on
is zeros), and corruption (``CORRUPT``: checksum mismatch, impossible header, bytes after a
zero header). What to do about each is the caller's policy (see ``segment.py``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from crc32c import crc32c

HEADER = struct.Struct("<IBBHII")
HEADER_SIZE = HEADER.size  # 16
ALIGN = 8
# A payload is one WAL entry: at most a 16 MiB batch plus keys and framing of msgpack. The
# bound only guards the reader against absurd allocations; the header CRC already vouches for
# the length.
MAX_PAYLOAD_BYTES = 64 << 20
_READ_CHUNK = 1 << 20
_ZERO_HEADER = bytes(HEADER_SIZE)


class RecordType(enum.IntEnum):
    SEGMENT = 1  # opens every segment: segment metadata and the previous segment's last CRC
    ENTRY = 2  # one WalEntry, msgpack


class DamageKind(enum.StrEnum):
    TORN = "torn"  # an interrupted write at the end of the data: short read or trailing zeros
    CORRUPT = "corrupt"  # the bytes are there but wrong


class FrameDamage(Exception):
    """Raised by ``read_frames`` where decoding cannot continue: ``offset`` is the file offset
    of the record that is damaged (everything before it decoded cleanly)."""

    def __init__(self, kind: DamageKind, offset: int, reason: str) -> None:
        super().__init__(f"{kind.value} record at offset {offset}: {reason}")
        self.kind = kind
        self.offset = offset
        self.reason = reason


class Frame(NamedTuple):
    """One decoded record. ``crc`` is the chained CRC after this record (the seed of the
    next); ``end`` is the file offset just past its padding. (A NamedTuple: one is made per
    record on every read, and it is several times cheaper to build than a dataclass.)"""

    type: int  # a RecordType value
    payload: bytes
    offset: int
    end: int
    crc: int


def padding_for(length: int) -> int:
    return -length % ALIGN


def frame_size(payload_length: int) -> int:
    return HEADER_SIZE + payload_length + padding_for(payload_length)


_HEAD = struct.Struct("<IBBHI")  # the header's first 12 bytes, covered by the header CRC
_U32 = struct.Struct("<I")
_PADS = tuple(bytes(n) for n in range(ALIGN))


def encode_frame(rtype: RecordType, payload: bytes, prev_crc: int) -> tuple[bytes, int]:
    """The on-disk bytes of one record and its chained CRC (the next record's seed)."""
    length = len(payload)
    if length > MAX_PAYLOAD_BYTES:
        raise ValueError(f"record payload is {length} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    pad = -length % ALIGN
    crc = crc32c(payload, prev_crc)
    head = _HEAD.pack(length, pad, rtype, 0, crc)
    return b"".join((head, _U32.pack(crc32c(head)), payload, _PADS[pad])), crc


_TYPES = frozenset(int(t) for t in RecordType)


def parse_header(header: bytes) -> tuple[int, int, int, int] | None:
    """``(length, pad, type, crc)`` if ``header`` is an intact, plausible record header;
    None otherwise (checksum mismatch, unknown type, inconsistent padding, too long)."""
    length, pad, rtype, reserved, crc, hcrc = HEADER.unpack(header)
    if hcrc != crc32c(header[:12]) or reserved != 0:
        return None
    if pad != -length % ALIGN or length > MAX_PAYLOAD_BYTES or rtype not in _TYPES:
        return None
    return length, pad, rtype, crc


def find_intact_header(data: bytes, base_offset: int) -> int | None:
    """The file offset of the first 8-byte aligned intact header in ``data`` (which starts at
    file offset ``base_offset``, itself aligned), or None. Used to tell damage at the very end
    of a log (nothing valid follows: an interrupted write) from damage in its middle."""
    view = memoryview(data)
    for pos in range(0, len(data) - HEADER_SIZE + 1, ALIGN):
        chunk = view[pos : pos + HEADER_SIZE]
        if chunk == _ZERO_HEADER:
            continue
        if parse_header(bytes(chunk)) is not None:
            return base_offset + pos
    return None


def read_frames(
    f: BinaryIO, start: int = 0, crc: int = 0, limit: int | None = None
) -> Iterator[Frame]:
    """Decode records from ``f`` starting at file offset ``start`` with chained CRC ``crc``.

    Stops cleanly at end of file (or at ``limit``, treated as the end of file: a reader can
    stop at the last acknowledged byte of a file that is still being written). Raises
    ``FrameDamage`` at the first record it cannot decode.
    """
    f.seek(start)
    buf = b""
    pos = 0
    offset = start  # file offset of buf[pos]
    remaining = None if limit is None else max(0, limit - start)

    def fill(need: int) -> bool:
        """Make ``need`` bytes available at ``buf[pos:]``; False at end of data."""
        nonlocal buf, pos, remaining
        if len(buf) - pos >= need:
            return True
        buf = buf[pos:]
        pos = 0
        while len(buf) < need:
            want = max(need - len(buf), _READ_CHUNK)
            if remaining is not None:
                want = min(want, remaining)
            more = f.read(want) if want > 0 else b""
            if not more:
                return False
            if remaining is not None:
                remaining -= len(more)
            buf += more
        return True

    def rest_is_zero() -> bool:
        nonlocal remaining
        if buf[pos:].strip(b"\x00"):
            return False
        while True:
            want = _READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining)
            more = f.read(want) if want > 0 else b""
            if not more:
                return True
            if remaining is not None:
                remaining -= len(more)
            if more.strip(b"\x00"):
                return False

    unpack_header = HEADER.unpack_from
    # The loop below is the hot path of recovery and of every WAL read: one pass per record,
    # with the buffer refilled only when a record crosses its end.
    while True:
        if len(buf) - pos < HEADER_SIZE and not fill(HEADER_SIZE):
            if len(buf) == pos:
                return
            raise FrameDamage(DamageKind.TORN, offset, f"{len(buf) - pos} bytes, short header")
        length, pad, rtype, reserved, want_crc, hcrc = unpack_header(buf, pos)
        if (
            hcrc != crc32c(buf[pos : pos + 12])
            or reserved
            or pad != -length % ALIGN
            or length > MAX_PAYLOAD_BYTES
            or rtype not in _TYPES
        ):
            if buf[pos : pos + HEADER_SIZE] == _ZERO_HEADER:
                if rest_is_zero():
                    raise FrameDamage(DamageKind.TORN, offset, "zeros to the end")
                raise FrameDamage(DamageKind.CORRUPT, offset, "zero header followed by data")
            raise FrameDamage(DamageKind.CORRUPT, offset, "header checksum mismatch")
        size = HEADER_SIZE + length + pad
        if len(buf) - pos < size and not fill(size):
            raise FrameDamage(
                DamageKind.TORN, offset, f"short record: {len(buf) - pos} of {size} bytes"
            )
        start = pos + HEADER_SIZE
        payload = buf[start : start + length]
        got_crc = crc32c(payload, crc)
        if got_crc != want_crc:
            raise FrameDamage(DamageKind.CORRUPT, offset, "data checksum mismatch")
        if pad and buf[start + length : pos + size] != _PADS[pad]:
            raise FrameDamage(DamageKind.CORRUPT, offset, "non-zero padding")
        crc = got_crc
        end = offset + size
        yield Frame(rtype, payload, offset, end, crc)
        pos += size
        offset = end
