"""Making files durable: the one place that knows which syncs a crash-safe file change needs.

A write is on disk after power loss only if its file was fsynced after it; a new name (a
created, renamed or deleted file, a new directory) only if its *directory* was fsynced after
the change. The patterns here are the ones every writer in shardkv needs:

- ``write_atomically``: whole-file replace (temporary name, fsync, rename, directory fsync):
  after a crash a reader sees the old file or the new one, never half of one.
- ``install``: give an already fsynced temporary file its final name durably.
- ``ensure_dir``: create missing directories so that their entries survive a crash.
- ``fdatasync`` / ``fsync_fd`` / ``sync_file``: data syncs for append-style files (WAL
  segments, the Raft journal) that are written in place.

Every function looks ``os.fsync``/``os.fdatasync`` up at call time, so the power-loss tests
(``tests/powerloss``) see every sync the code makes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"

PathLike = str | os.PathLike[str]


def fsync_fd(fd: int) -> None:
    """fsync a file descriptor (data and metadata)."""
    os.fsync(fd)


def fdatasync(fd: int) -> None:
    """fdatasync where the platform has it (data plus the size needed to read it back),
    fsync elsewhere."""
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


def sync_file(f: IO[Any]) -> None:
    """Flush a Python file object's buffer to the kernel, then fsync it."""
    f.flush()
    os.fsync(f.fileno())


def fsync_dir(directory: PathLike) -> None:
    """Make creations, renames and deletions of entries in ``directory`` durable."""
    fd = os.open(os.fspath(directory) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(directory: PathLike) -> None:
    """Create ``directory`` (and missing parents) durably: each new directory's entry is
    fsynced into its parent, or a crash could lose a whole directory of fsynced files."""
    missing: list[Path] = []
    current = Path(directory)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        fsync_dir(path.parent)


def install(tmp: PathLike, final: PathLike) -> None:
    """Rename the (already fsynced) ``tmp`` over ``final`` and make the new name durable."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def write_atomically(path: PathLike, data: bytes, *, tmp_suffix: str = TMP_SUFFIX,
                     mode: int = 0o666) -> None:
    """Replace ``path`` with ``data``: temporary name, fsync, rename, directory fsync.
    ``mode`` (before the umask) applies from creation on: 0o600 keeps a secret private even
    in its temporary file."""
    tmp = os.fspath(path) + tmp_suffix
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover would keep its old mode
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)
        sync_file(f)
    install(tmp, path)


def truncate_durably(path: PathLike, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and fsync the file, so the cut survives a crash."""
    os.truncate(path, size)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
