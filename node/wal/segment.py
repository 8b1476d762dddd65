"""WAL segment files: naming, creation, and reading one segment back with its checks.

A segment is one file of framed records (``framing.py``) named after its sequence number and
the LSN of its first entry, ``<seq 16 digits>-<first lsn 16 digits>.wal``, so the log's shape
can be known from a directory listing. It opens with a SEGMENT record (this header) and then
holds ENTRY records with consecutive LSNs starting at the first LSN.

A segment is created complete-or-absent: written under ``*.tmp``, fsynced, renamed, and the
directory fsynced, so a crash never leaves a half-made segment under a segment name.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import msgpack
from shardkv.cluster.durable_file import fsync_fd, install
from shardkv.node.wal.framing import (
    HEADER_SIZE,
    DamageKind,
    FrameDamage,
    RecordType,
    encode_frame,
    find_intact_header,
    frame_size,
    parse_header,
    read_frames,
)
from shardkv.node.wal.record import MutationKind, WalEntry, payload_of

SEGMENT_SUFFIX = ".wal"
TMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^(\d{16})-(\d{16})\.wal$")
_SEGMENT_HEADER = struct.Struct("<4sHHQQQI")
_MAGIC = b"SKVW"
_FORMAT_VERSION = 1

T = TypeVar("T")

FLAG_RESTART = 1  # this segment restarts the log: every older segment is obsolete


class WalCorruption(Exception):
    """The log is damaged where acknowledged data may live: the node must not start on it.

    Never raised for an interrupted write at the end of the newest segment (that is repaired).
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"WAL corruption in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def segment_name(seq: int, first_lsn: int) -> str:
    return f"{seq:016d}-{first_lsn:016d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """``(seq, first_lsn)`` of a segment file name, None for any other file."""
    match = _NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def list_segment_files(directory: Path) -> list[tuple[int, int, Path]]:
    """``(seq, first_lsn, path)`` of every segment in ``directory``, oldest first."""
    found = []
    for path in directory.iterdir():
        parsed = parse_segment_name(path.name)
        if parsed is not None:
            found.append((parsed[0], parsed[1], path))
    found.sort()
    return found


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """What the opening record of a segment says. ``prev_epoch`` is the epoch of the entry
    before ``first_lsn`` (so an empty newest segment still tells the log's epoch) and
    ``prev_crc`` the last CRC of the previous segment (0 for the first or a restart)."""

    seq: int
    first_lsn: int
    prev_epoch: int = 0
    prev_crc: int = 0
    flags: int = 0

    def encode(self) -> bytes:
        return _SEGMENT_HEADER.pack(
            _MAGIC,
            _FORMAT_VERSION,
            self.flags,
            self.seq,
            self.first_lsn,
            self.prev_epoch,
            self.prev_crc,
        )

    @classmethod
    def decode(cls, payload: bytes) -> SegmentHeader:
        if len(payload) != _SEGMENT_HEADER.size:
            raise ValueError(f"segment header is {len(payload)} bytes")
        magic, version, flags, seq, first_lsn, prev_epoch, prev_crc = _SEGMENT_HEADER.unpack(
            payload
        )
        if magic != _MAGIC:
            raise ValueError(f"bad segment magic {magic!r}")
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported segment format version {version}")
        return cls(seq, first_lsn, prev_epoch, prev_crc, flags)

    @property
    def restart(self) -> bool:
        return bool(self.flags & FLAG_RESTART)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def create_segment(directory: Path, header: SegmentHeader) -> tuple[Path, int, int]:
    """Create a segment holding only its header record, durably. Returns its path, size and
    the CRC that seeds its first entry. Blocking: run it in a thread."""
    frame, crc = encode_frame(RecordType.SEGMENT, header.encode(), 0)
    path = directory / segment_name(header.seq, header.first_lsn)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, frame)
        fsync_fd(fd)
    finally:
        os.close(fd)
    install(tmp, path)
    return path, len(frame), crc


def encode_entry(entry: WalEntry, prev_crc: int) -> tuple[bytes, int]:
    """The framed bytes of one entry and the chained CRC after it. The caller has passed
    ``entry`` through ``check_entry``."""
    return encode_frame(RecordType.ENTRY, payload_of(entry), prev_crc)


_BYTES = (bytes, bytearray)
_NUMBER = (int, float)


def check_entry(entry: WalEntry) -> None:
    """Raise ``ValueError`` unless ``entry`` has the types ``WalEntry.from_wire`` needs to
    rebuild it exactly, so bad input never reaches the disk. Cheap (type checks only): it
    runs for every append."""
    if type(entry.lsn) is not int or entry.lsn < 1:
        raise ValueError(f"entry lsn must be a positive int, got {entry.lsn!r}")
    if type(entry.epoch) is not int or entry.epoch < 0:
        raise ValueError(f"entry epoch must be a non-negative int, got {entry.epoch!r}")
    if not isinstance(entry.ts, _NUMBER) or isinstance(entry.ts, bool):
        raise ValueError(f"entry ts must be a number, got {entry.ts!r}")
    for m in entry.mutations:
        if not isinstance(m.kind, MutationKind):
            raise ValueError(f"mutation kind must be a MutationKind, got {m.kind!r}")
        if not isinstance(m.key, _BYTES) or not isinstance(m.value, _BYTES):
            raise ValueError("mutation key and value must be bytes")
        if type(m.compressed) is not bool:
            raise ValueError(f"mutation compressed flag must be a bool, got {m.compressed!r}")
        expires = m.expires_at
        if expires is not None and (not isinstance(expires, _NUMBER) or isinstance(expires, bool)):
            raise ValueError(f"mutation expires_at must be a number or None, got {expires!r}")
        prev = m.prev_version
        if prev is not None and (type(prev) is not int or prev < 0):
            raise ValueError(f"mutation prev_version must be a non-negative int or None, "
                             f"got {prev!r}")


_UINT = {0xCC: struct.Struct(">B"), 0xCD: struct.Struct(">H"), 0xCE: struct.Struct(">I")}
_UINT[0xCF] = struct.Struct(">Q")


def _peek_uint(payload: bytes, pos: int) -> tuple[int, int]:
    """A msgpack unsigned integer at ``pos``: its value and the position after it."""
    marker = payload[pos]
    if marker < 0x80:
        return marker, pos + 1
    fmt = _UINT.get(marker)
    if fmt is None:
        raise ValueError(f"expected an unsigned integer, found marker {marker:#x}")
    return fmt.unpack_from(payload, pos + 1)[0], pos + 1 + fmt.size


def _peek_lsn_epoch(payload: bytes) -> tuple[int, int]:
    """LSN and epoch of an encoded entry without decoding the rest (mutations and values):
    the scan at open only needs these, and skipping the values makes it several times
    faster. ``read_segment_entries`` decodes and checks everything when entries are read."""
    try:
        if payload[0] != 0x94:  # a 4-element array: [lsn, epoch, ts, mutations]
            raise ValueError("entry is not a 4-element array")
        lsn, pos = _peek_uint(payload, 1)
        epoch, _ = _peek_uint(payload, pos)
    except (IndexError, struct.error) as exc:
        raise ValueError(f"entry too short: {exc}") from exc
    return lsn, epoch


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where reading can start mid-segment: the entry ``lsn`` is the record at ``offset``, and
    ``crc`` seeds its CRC (the chained value of the record before it). A sparse list of these
    per segment lets ``read_from`` seek instead of decoding a whole segment from its start."""

    lsn: int
    offset: int
    crc: int


CHECKPOINT_BYTES = 64 << 10  # one checkpoint per this much log: ~1k per 64 MiB segment


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """The result of checking one segment. ``end`` and ``crc`` describe the last good record
    (where appending resumes); ``damage`` is None when the whole file decoded cleanly."""

    path: Path
    header: SegmentHeader
    entries: int
    last_lsn: int  # header.first_lsn - 1 when the segment has no entries
    last_epoch: int  # header.prev_epoch when the segment has no entries
    end: int
    crc: int
    file_size: int
    damage: FrameDamage | None = None
    checkpoints: tuple[Checkpoint, ...] = ()

    @property
    def first_lsn(self) -> int:
        return self.header.first_lsn


def scan_segment(path: Path, *, newest: bool = False, until_lsn: int | None = None) -> SegmentScan:
    """Check one segment from its start: framing, CRC chain, its header against its name,
    LSN continuity. Blocking: run it in a thread.

    Raises ``WalCorruption`` when the opening header record itself is unreadable (it was
    fsynced before the segment got its name, so that is never a torn write). Damage after it
    is returned in ``damage``. With ``newest``, checksum damage that no intact record follows
    is reported as TORN: the rule of the tail (see ``recovery.py``). With ``until_lsn`` the scan
    stops after that entry (to find where to cut the file).
    """
    named = parse_segment_name(path.name)
    file_size = path.stat().st_size
    with path.open("rb") as f:
        frames = read_frames(f)
        try:
            first = next(frames)
        except (StopIteration, FrameDamage) as exc:
            raise WalCorruption(path, 0, f"unreadable segment header ({exc or 'empty'})") from exc
        try:
            if first.type != RecordType.SEGMENT:
                raise ValueError("first record is not a segment header")
            header = SegmentHeader.decode(first.payload)
        except ValueError as exc:
            raise WalCorruption(path, 0, str(exc)) from exc
        if named is not None and named != (header.seq, header.first_lsn):
            raise WalCorruption(path, 0, f"header says seq {header.seq} lsn {header.first_lsn}")
        entries = 0
        last_lsn, last_epoch = header.first_lsn - 1, header.prev_epoch
        end, crc = first.end, first.crc
        damage: FrameDamage | None = None
        checkpoints: list[Checkpoint] = []
        try:
            for frame in frames:
                if until_lsn is not None and last_lsn >= until_lsn:
                    break
                try:
                    if frame.type != RecordType.ENTRY:
                        raise ValueError(f"unexpected record of type {frame.type}")
                    lsn, epoch = _peek_lsn_epoch(frame.payload)
                except ValueError as exc:
                    damage = FrameDamage(DamageKind.CORRUPT, frame.offset, str(exc))
                    break
                if lsn != last_lsn + 1:
                    damage = FrameDamage(
                        DamageKind.CORRUPT, frame.offset, f"lsn {lsn} follows {last_lsn}"
                    )
                    break
                if not checkpoints or frame.offset - checkpoints[-1].offset >= CHECKPOINT_BYTES:
                    checkpoints.append(Checkpoint(lsn, frame.offset, crc))
                entries += 1
                last_lsn, last_epoch, end, crc = lsn, epoch, frame.end, frame.crc
        except FrameDamage as exc:
            damage = exc
            if newest and exc.kind is DamageKind.CORRUPT and _nothing_intact_after(f, exc.offset):
                damage = FrameDamage(
                    DamageKind.TORN,
                    exc.offset,
                    f"{exc.reason} in the last record (nothing intact follows)",
                )
    return SegmentScan(
        path,
        header,
        entries,
        last_lsn,
        last_epoch,
        end,
        crc,
        file_size,
        damage,
        tuple(checkpoints),
    )


def _nothing_intact_after(f: BinaryIO, offset: int) -> bool:
    """Whether no intact record header exists after the damaged record at ``offset``."""
    f.seek(offset)
    header = f.read(HEADER_SIZE)
    parsed = parse_header(header) if len(header) == HEADER_SIZE else None
    skip = frame_size(parsed[0]) if parsed is not None else 8
    f.seek(offset + skip)
    # Only ever done at recovery, once, on the newest segment: reading its rest is fine.
    return find_intact_header(f.read(), offset + skip) is None


def read_segment_entries(
    path: Path,
    first_lsn: int,
    from_lsn: int,
    limit: int | None = None,
    start: Checkpoint | None = None,
    until_lsn: int | None = None,
) -> Iterator[WalEntry]:
    """Entries of one segment with ``from_lsn <= lsn <= until_lsn`` (None: to the end),
    stopping at byte ``limit`` (the acknowledged end of a segment still being written),
    reading from ``start`` if given (a checkpoint at or before ``from_lsn``) else from the
    segment's beginning. Entries before ``from_lsn`` are skipped without being decoded: LSNs
    in a segment are consecutive."""
    return read_segment_records(path, first_lsn, from_lsn, WalEntry.from_wire, limit, start,
                                until_lsn)


def read_segment_records(
    path: Path,
    first_lsn: int,
    from_lsn: int,
    decode: Callable[[list[Any]], T],
    limit: int | None = None,
    start: Checkpoint | None = None,
    until_lsn: int | None = None,
) -> Iterator[T]:
    """``read_segment_entries`` with each entry's msgpack form (``[lsn, epoch, ts,
    mutations]``) passed to ``decode``: recovery replays the wire form into the engine without
    building a ``WalEntry`` and its ``Mutation`` objects (issue 17). The LSN is checked here
    whatever ``decode`` does; a ``ValueError``/``TypeError`` from it is corruption."""
    with path.open("rb") as f:
        if start is None:
            frames = read_frames(f, limit=limit)
            expected = first_lsn
        else:
            frames = read_frames(f, start=start.offset, crc=start.crc, limit=limit)
            expected = start.lsn
        try:
            for frame in frames:
                if frame.type == RecordType.SEGMENT:
                    if frame.offset != 0:
                        raise WalCorruption(path, frame.offset, "segment header mid-file")
                    continue
                if until_lsn is not None and expected > until_lsn:
                    return
                if expected >= from_lsn:
                    try:
                        raw = msgpack.unpackb(frame.payload, raw=False)
                        entry = decode(raw)
                        lsn = raw[0]
                    except (ValueError, TypeError, IndexError, KeyError) as exc:
                        raise WalCorruption(
                            path, frame.offset, f"undecodable entry: {exc}"
                        ) from exc
                    if lsn != expected:
                        raise WalCorruption(
                            path, frame.offset, f"lsn {lsn}, expected {expected}"
                        )
                    yield entry
                expected += 1
        except FrameDamage as exc:
            raise WalCorruption(path, exc.offset, exc.reason) from exc
