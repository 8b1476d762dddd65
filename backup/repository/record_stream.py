"""Files of records: msgpack records, one zstd stream, optionally encrypted, streamed both ways.

Writing: records are packed into a buffer; each MiB of it goes through zstd (one stream,
level 3), then through the ``Encryptor`` when a key is given, then to the destination's
upload, while SHA-256 and the size are computed over the bytes actually stored. Memory holds
one buffer, whatever the file's size. ``close`` returns the ``StoredFile`` the manifest
records; ``abort`` leaves nothing in the destination.

Reading is the inverse, and checks the stored size and SHA-256 when the stream ends (so a
damaged file raises ``DamagedFile`` naming it). A reader that must not act on a single
record of a damaged file checks it first with ``check_stored`` (hash only, no key needed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard
from shardkv.backup.repository.destination import Destination, Upload
from shardkv.backup.repository.encryption import Decryptor, Encryptor
from shardkv.backup.repository.errors import DamagedFile, MissingFile

ZSTD_LEVEL = 3
_FLUSH_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What the manifest says of one file: where, how big stored and raw, its hash."""

    name: str
    size: int
    sha256: str
    records: int
    raw_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256,
                "records": self.records, "raw_bytes": self.raw_bytes}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StoredFile:
        return cls(str(raw["name"]), int(raw["size"]), str(raw["sha256"]),
                   int(raw.get("records", 0)), int(raw.get("raw_bytes", 0)))


class RecordWriter:
    def __init__(self, dest: Destination, name: str, key: bytes | None) -> None:
        self.name = name
        self._upload: Upload = dest.upload(name)
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        self._encryptor = Encryptor(key) if key is not None else None
        self._packer = msgpack.Packer(use_bin_type=True)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._hash = hashlib.sha256()
        self.size = 0
        self.records = 0
        self.raw_bytes = 0

    def _store(self, data: bytes) -> None:
        if self._encryptor is not None:
            data = self._encryptor.feed(data)
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if data:
            self._hash.update(data)
            self.size += len(data)
            self._upload.write(data)

    def _flush(self) -> None:
        if self._buffer:
            self._store(self._compressor.compress(b"".join(self._buffer)))
            self._buffer, self._buffered = [], 0

    def write(self, record: Any) -> None:
        packed = self._packer.pack(record)
        self._buffer.append(packed)
        self._buffered += len(packed)
        self.records += 1
        self.raw_bytes += len(packed)
        if self._buffered >= _FLUSH_BYTES:
            self._flush()

    def write_packed(self, packed: bytes, records: int) -> None:
        """``records`` records already packed with msgpack (passed through as they are)."""
        self._buffer.append(packed)
        self._buffered += len(packed)
        self.records += records
        self.raw_bytes += len(packed)
        if self._buffered >= _FLUSH_BYTES:
            self._flush()

    def close(self) -> StoredFile:
        """Finish the file and make it visible; on any error nothing is left behind."""
        try:
            self._flush()
            self._store(self._compressor.flush())
            if self._encryptor is not None:
                self._emit(self._encryptor.finish())
            self._upload.commit()
        except BaseException:
            self._upload.abort()
            raise
        return StoredFile(self.name, self.size, self._hash.hexdigest(), self.records,
                          self.raw_bytes)

    def abort(self) -> None:
        self._upload.abort()


def _checked_chunks(dest: Destination, expect: StoredFile) -> Iterator[bytes]:
    digest = hashlib.sha256()
    size = 0
    for chunk in dest.read_chunks(expect.name):
        digest.update(chunk)
        size += len(chunk)
        if size > expect.size:
            raise DamagedFile(expect.name, f"longer than the {expect.size} bytes recorded")
        yield chunk
    if size != expect.size:
        raise DamagedFile(expect.name, f"{size} bytes, {expect.size} recorded (truncated?)")
    if digest.hexdigest() != expect.sha256:
        raise DamagedFile(expect.name, "SHA-256 mismatch (the file was altered)")


def check_stored(dest: Destination, expect: StoredFile) -> None:
    """Size and SHA-256 of a stored file against the record (no key needed)."""
    for _chunk in _checked_chunks(dest, expect):
        pass


def read_records(dest: Destination, expect: StoredFile, key: bytes | None) -> Iterator[Any]:
    """The records of a stored file, streaming; raises ``DamagedFile`` / ``WrongKey`` /
    ``MissingFile`` naming the file (the size and hash are checked when the stream ends)."""
    decryptor = Decryptor(key, expect.name) if key is not None else None
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    unpacker = msgpack.Unpacker(raw=False, use_list=True, max_buffer_size=64 << 20)
    seen = 0
    try:
        for chunk in _checked_chunks(dest, expect):
            if decryptor is not None:
                chunk = decryptor.feed(chunk)
            unpacker.feed(decompressor.decompress(chunk))
            for record in unpacker:
                seen += 1
                yield record
        if decryptor is not None:
            decryptor.finish()
    except MissingFile:
        raise
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
        raise DamagedFile(expect.name, f"undecodable after {seen} records: {exc}") from None
    if not decompressor.eof:
        raise DamagedFile(expect.name, "the compressed stream ends early")
    if seen != expect.records:
        raise DamagedFile(expect.name, f"{seen} records, {expect.records} recorded")
