"""Snapshot files: an engine's whole state at one LSN, compressed and checksummed.

A snapshot bounds recovery (load it, then replay only the WAL after its LSN) and seeds a
replica too far behind to catch up from the log. File ``snapshot-<lsn 16 digits>.snap``::

    header  (40 bytes)  magic "SHKVSNAP", format version, flags, lsn, epoch, record count
    body                one zstd stream of msgpack records [key, value, compressed, version,
                        expires_at], in the order the engine produced them
    trailer (32 bytes)  magic "SHKVEND\\0", record count, body length, CRC32C of the body,
                        CRC32C of the header

Written streaming (memory stays flat whatever the state size) to ``*.tmp``: the count is only
known at the end, so the header is rewritten in place once the body is done, then the file
is fsynced, renamed, and the directory fsynced. A crash at any point leaves either no
snapshot under the final name or a complete one.

Reading checks the trailer's CRCs over the whole file *before* yielding a record, so a caller
never loads half of a damaged snapshot; decoding then checks the record count as well.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack
import zstandard
from crc32c import crc32c
from shardkv.cluster.durable_file import ensure_dir, fsync_dir, install, sync_file
from shardkv.cluster.structured_log import log_fields

log = logging.getLogger("shardkv.node.storage.snapshots.snapshot")

SnapshotItem = tuple[bytes, bytes, bool, int, float | None]

_HEADER = struct.Struct("<8sHHIQQQ")
_TRAILER = struct.Struct("<8sQQII")
_MAGIC = b"SHKVSNAP"
_END_MAGIC = b"SHKVEND\x00"
_FORMAT_VERSION = 1
_NAME = re.compile(r"^snapshot-(\d{16})\.snap$")
_TMP_NAME = re.compile(r"^snapshot-(\d{16})\.snap(?:\.recv)?\.tmp$")  # written or received
_CHUNK = 1 << 20
_LEVEL = 3


class SnapshotCorrupt(Exception):
    """A snapshot file is damaged or not a snapshot; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"snapshot {path} is damaged: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class SnapshotMeta:
    path: Path
    lsn: int
    epoch: int
    count: int


def snapshot_name(lsn: int) -> str:
    return f"snapshot-{lsn:016d}.snap"


# ------------------------------------------------------------------------------------ writing


class _BodyWriter:
    """Compresses and writes the body in chunks; used from one worker thread at a time."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.compressor = zstandard.ZstdCompressor(level=_LEVEL).compressobj()
        self.crc = 0
        self.length = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self.f.write(data)
            self.crc = crc32c(data, self.crc)
            self.length += len(data)

    def write(self, raw: bytes) -> None:
        self._emit(self.compressor.compress(raw))

    def finish(self) -> None:
        self._emit(self.compressor.flush())


async def write_snapshot(
    directory: Path, lsn: int, epoch: int, items: AsyncIterable[SnapshotItem]
) -> SnapshotMeta:
    """Write the state ``items`` as the snapshot at ``lsn`` (replacing one at the same LSN)
    durably, and return its metadata. On any error no snapshot file is left behind."""
    path = Path(directory) / snapshot_name(lsn)
    tmp = path.with_name(path.name + ".tmp")
    f = await asyncio.to_thread(_create, tmp)
    try:
        f.write(_HEADER.pack(_MAGIC, _FORMAT_VERSION, 0, 0, lsn, epoch, 0))
        body = _BodyWriter(f)
        packer = msgpack.Packer(use_bin_type=True)
        buffer: list[bytes] = []
        buffered = 0
        count = 0
        async for key, value, compressed, version, expires_at in items:
            record = packer.pack((key, value, compressed, version, expires_at))
            buffer.append(record)
            buffered += len(record)
            count += 1
            if buffered >= _CHUNK:
                await asyncio.to_thread(body.write, b"".join(buffer))
                buffer, buffered = [], 0
        await asyncio.to_thread(_finish, f, body, b"".join(buffer), lsn, epoch, count, path)
    except BaseException:
        await asyncio.to_thread(_discard, f, tmp)
        raise
    log.debug(
        "snapshot written",
        extra=log_fields(path=str(path), lsn=lsn, epoch=epoch, count=count, bytes=body.length),
    )
    return SnapshotMeta(path, lsn, epoch, count)


def _create(tmp: Path) -> BinaryIO:
    ensure_dir(tmp.parent)
    return tmp.open("wb")


def _finish(
    f: BinaryIO, body: _BodyWriter, rest: bytes, lsn: int, epoch: int, count: int, path: Path
) -> None:
    """Complete the file, make it durable, and give it its name."""
    body.write(rest)
    body.finish()
    header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, 0, 0, lsn, epoch, count)
    f.write(_TRAILER.pack(_END_MAGIC, count, body.length, body.crc, crc32c(header)))
    f.seek(0)
    f.write(header)
    sync_file(f)
    f.close()
    install(f.name, path)


def _discard(f: BinaryIO, tmp: Path) -> None:
    f.close()
    tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ reading


def _read_header(path: Path, f: BinaryIO) -> tuple[int, int, int, bytes]:
    header = f.read(_HEADER.size)
    if len(header) != _HEADER.size:
        raise SnapshotCorrupt(path, f"only {len(header)} bytes of header")
    magic, version, _flags, _reserved, lsn, epoch, count = _HEADER.unpack(header)
    if magic != _MAGIC:
        raise SnapshotCorrupt(path, f"bad magic {magic!r}")
    if version != _FORMAT_VERSION:
        raise SnapshotCorrupt(path, f"unsupported format version {version}")
    return lsn, epoch, count, header


def _check(path: Path, f: BinaryIO) -> tuple[SnapshotMeta, int]:
    """Verify framing and checksums of an open snapshot; returns its meta and body length."""
    lsn, epoch, count, header = _read_header(path, f)
    named = _NAME.match(path.name)
    if named is not None and int(named.group(1)) != lsn:
        raise SnapshotCorrupt(path, f"header says lsn {lsn}")
    size = os.fstat(f.fileno()).st_size
    if size < _HEADER.size + _TRAILER.size:
        raise SnapshotCorrupt(path, f"{size} bytes is too short (truncated?)")
    f.seek(size - _TRAILER.size)
    magic, trailer_count, body_length, body_crc, header_crc = _TRAILER.unpack(f.read(_TRAILER.size))
    if magic != _END_MAGIC:
        raise SnapshotCorrupt(path, "no trailer (truncated?)")
    if body_length != size - _HEADER.size - _TRAILER.size:
        raise SnapshotCorrupt(
            path, f"body is {size - _HEADER.size - _TRAILER.size} bytes, trailer says {body_length}"
        )
    if header_crc != crc32c(header) or trailer_count != count:
        raise SnapshotCorrupt(path, "header checksum mismatch")
    f.seek(_HEADER.size)
    crc, left = 0, body_length
    while left:
        chunk = f.read(min(_CHUNK * 4, left))
        if not chunk:
            raise SnapshotCorrupt(path, "file shrank while reading")
        crc = crc32c(chunk, crc)
        left -= len(chunk)
    if crc != body_crc:
        raise SnapshotCorrupt(path, "body checksum mismatch")
    return SnapshotMeta(path, lsn, epoch, count), body_length


def check_snapshot(path: Path) -> SnapshotMeta:
    """Verify a snapshot's structure and checksums without decoding its records."""
    try:
        with Path(path).open("rb") as f:
            return _check(path, f)[0]
    except OSError as exc:
        raise SnapshotCorrupt(path, f"cannot read: {exc}") from exc


def read_snapshot(path: Path) -> Iterator[SnapshotItem]:
    """The records of a snapshot, after verifying its checksums (so nothing is yielded from a
    damaged file). Raises ``SnapshotCorrupt`` on any damage. Blocking: run it in a thread."""
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise SnapshotCorrupt(path, f"cannot read: {exc}") from exc
    with f:
        meta, body_length = _check(path, f)
        f.seek(_HEADER.size)
        yield from _decode_body(path, f, body_length, meta.count)


def _decode_body(path: Path, f: BinaryIO, body_length: int, count: int) -> Iterator[SnapshotItem]:
    unpacker = msgpack.Unpacker(raw=False, use_list=False, max_buffer_size=64 << 20)
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    seen, left = 0, body_length
    try:
        while left:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise SnapshotCorrupt(path, "file shrank while reading")
            left -= len(chunk)
            unpacker.feed(decompressor.decompress(chunk))
            for record in unpacker:
                if type(record) is not tuple or len(record) != 5:
                    raise SnapshotCorrupt(path, f"record {seen} is not a 5-element array")
                seen += 1
                yield record
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
        raise SnapshotCorrupt(path, f"undecodable body after {seen} records: {exc}") from exc
    if not decompressor.eof:
        raise SnapshotCorrupt(path, "compressed body ends early")
    if seen != count:
        raise SnapshotCorrupt(path, f"{seen} records, header says {count}")


# ----------------------------------------------------------------------------- the directory


def list_snapshots(directory: Path) -> list[SnapshotMeta]:
    """Snapshots in ``directory``, newest LSN first, from names and headers only (cheap: no
    checksum). Files whose header cannot be read are left out (and logged)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if _NAME.match(path.name) is None:
            continue
        try:
            with path.open("rb") as f:
                lsn, epoch, count, _ = _read_header(path, f)
        except (OSError, SnapshotCorrupt) as exc:
            log.warning(
                "unreadable snapshot header", extra=log_fields(path=str(path), error=str(exc))
            )
            continue
        found.append(SnapshotMeta(path, lsn, epoch, count))
    found.sort(key=lambda meta: meta.path.name, reverse=True)
    return found


def latest_valid_snapshot(directory: Path) -> SnapshotMeta | None:
    """The newest snapshot whose checksums verify; damaged ones are logged and skipped (and
    kept on disk for a human to look at)."""
    for meta in list_snapshots(directory):
        try:
            return check_snapshot(meta.path)
        except SnapshotCorrupt as exc:
            log.error(
                "skipping a damaged snapshot",
                extra=log_fields(path=str(meta.path), lsn=meta.lsn, reason=exc.reason),
            )
    return None


def remove_old_snapshots(directory: Path, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` snapshots, and temporary files of writes older than
    the newest snapshot (left by a crash mid-write)."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    directory = Path(directory)
    if not directory.is_dir():
        return
    names = sorted((p for p in directory.iterdir() if _NAME.match(p.name)), reverse=True)
    doomed = names[keep:]
    if names:
        newest = int(_NAME.match(names[0].name).group(1))  # type: ignore[union-attr]
        for path in directory.iterdir():
            tmp = _TMP_NAME.match(path.name)
            if tmp is not None and int(tmp.group(1)) < newest:
                doomed.append(path)
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_dir(directory)
        log.info("old snapshots removed", extra=log_fields(count=len(doomed), kept=keep))
