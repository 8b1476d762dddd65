"""A destination: a flat namespace of immutable objects (``backups/<id>/manifest.json``, ...)
in a local directory or an S3 bucket, written streaming and complete-or-absent.

Writing goes through an ``Upload``: bytes are handed over in pieces (never the whole object
in memory) and the object appears under its name only at ``commit``; ``abort`` leaves
nothing behind. A local upload is a temporary file that is fsynced and renamed; an S3 upload
is a multipart upload completed at the end (``s3_destination.py``).

``open_destination`` picks the kind from the text the operator typed: ``s3://bucket/prefix``
or a directory path (``file://`` accepted).
"""

from __future__ import annotations

import abc
import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shardkv.backup.repository.errors import (
    BackupError,
    DestinationFull,
    DestinationUnreachable,
    MissingFile,
)

READ_CHUNK_BYTES = 1 << 20
_PART_MARK = ".part-"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    size: int
    modified: float


class Upload(abc.ABC):
    """One object being written; ``commit`` makes it visible, ``abort`` discards it."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...


class Destination(abc.ABC):
    url: str

    @abc.abstractmethod
    def upload(self, name: str) -> Upload: ...

    @abc.abstractmethod
    def read_chunks(self, name: str, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
        """The object's bytes in pieces; ``MissingFile`` if there is none by that name."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose name starts with ``prefix``, sorted by name."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove one object (no error if it is already gone)."""

    def put_bytes(self, name: str, data: bytes) -> None:
        upload = self.upload(name)
        try:
            upload.write(data)
            upload.commit()
        except BaseException:
            upload.abort()
            raise

    def read_bytes(self, name: str) -> bytes:
        return b"".join(self.read_chunks(name))

    def exists(self, name: str) -> bool:
        return any(info.name == name for info in self.list(name))


def check_name(name: str) -> str:
    """Object names are relative, ``/``-separated, without ``..``: a name from a damaged
    manifest must never reach outside the destination."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise BackupError(f"invalid object name {name!r}")
    return name


class _LocalUpload(Upload):
    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f"{final.name}{_PART_MARK}{secrets.token_hex(4)}")
        self._file: BinaryIO | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.tmp.open("wb")
        except OSError as exc:
            raise _os_error(exc, final) from None

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after commit/abort"
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise _os_error(exc, self.final) from None

    def commit(self) -> None:
        f, self._file = self._file, None
        assert f is not None, "commit twice"
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self.tmp, self.final)
            fd = os.open(self.final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            f.close()
            self.tmp.unlink(missing_ok=True)
            raise _os_error(exc, self.final) from None

    def abort(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # a full disk may refuse the flush of what we are throwing away
        self.tmp.unlink(missing_ok=True)


def _os_error(exc: OSError, path: Path) -> BackupError:
    if exc.errno in _FULL_ERRNOS:
        return DestinationFull(f"the destination is full writing {path}: {exc.strerror}")
    return BackupError(f"cannot write {path}: {exc.strerror or exc}")


class LocalDestination(Destination):
    """A directory (on a local disk, or a mounted network share)."""

    def __init__(self, root: Path, *, create: bool) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DestinationUnreachable(
                    f"cannot use {self.root} as a backup directory: {exc.strerror}") from None
        if not self.root.is_dir():
            raise DestinationUnreachable(f"{self.root} is not a directory (no backups there)")

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def upload(self, name: str) -> Upload:
        return _LocalUpload(self._path(name))

    def read_chunks(self, name: str, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
        path = self._path(name)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise MissingFile(name, f"not in {self.root}") from None
        except OSError as exc:
            raise BackupError(f"cannot read {path}: {exc.strerror}") from None
        with f:
            while chunk := f.read(chunk_bytes):
                yield chunk

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self.root
        # Only walk the directory the prefix names (the archive can hold many files).
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / head if head else base
        if not start.is_dir():
            return []
        found = []
        for path in start.rglob("*"):
            if _PART_MARK in path.name or not path.is_file():
                continue
            name = path.relative_to(base).as_posix()
            if name.startswith(prefix):
                stat = path.stat()
                found.append(ObjectInfo(name, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        path = self._path(name)
        path.unlink(missing_ok=True)
        # Leave no empty directories behind (a deleted backup disappears from a listing).
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()


def open_destination(url: str, *, create: bool = False) -> Destination:
    """The destination ``url`` names: ``s3://bucket[/prefix]`` or a directory. ``create``
    makes a missing directory (backup create, WAL archiving); readers want it to exist."""
    text = url.strip()
    if not text:
        raise BackupError("no destination given (a directory or s3://bucket/prefix)")
    if text.startswith("s3://"):
        from shardkv.backup.repository.s3_destination import S3Destination

        return S3Destination(text)
    if "://" in text and not text.startswith("file://"):
        raise BackupError(f"unsupported destination {text!r}: use a directory or s3://")
    return LocalDestination(Path(text.removeprefix("file://")), create=create)
