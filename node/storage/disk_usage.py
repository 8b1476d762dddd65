"""What a store occupies on disk, by kind, and what the file system has left.

Measured by listing three flat directories (``wal/``, ``snapshots/``, ``sqlite/``) and one
``statvfs``: a few system calls, cheap enough for every scrape and every ``ping``. Sizes are
the files' apparent sizes (what ``du --apparent-size`` counts), which is what an operator
compares with the data size; the free space is what an unprivileged writer may still use.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """One measurement. ``wal_bytes``/``snapshot_bytes``/``engine_bytes`` are the store's
    files by kind; ``free_bytes``/``total_bytes`` the file system holding ``data_dir``."""

    data_dir: str
    wal_bytes: int
    snapshot_bytes: int
    engine_bytes: int
    free_bytes: int
    total_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.wal_bytes + self.snapshot_bytes + self.engine_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "used_bytes": self.used_bytes}


def directory_bytes(directory: Path) -> int:
    """Total size of the regular files directly in ``directory`` (0 if it does not exist)."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # removed while we listed (a trimmed segment, a pruned snapshot)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return total


def free_bytes(path: Path) -> tuple[int, int]:
    """(free, total) bytes of the file system holding ``path``, as a non-root writer sees it."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def measure(data_dir: Path) -> DiskUsage:
    """Measure a store's data directory (laid out as ``StoreConfig`` says)."""
    free, total = free_bytes(data_dir)
    return DiskUsage(
        data_dir=str(data_dir),
        wal_bytes=directory_bytes(data_dir / "wal"),
        snapshot_bytes=directory_bytes(data_dir / "snapshots"),
        engine_bytes=directory_bytes(data_dir / "sqlite"),
        free_bytes=free,
        total_bytes=total,
    )
