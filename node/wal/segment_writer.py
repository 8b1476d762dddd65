"""The blocking half of group commit: writing a group of records to the active segment.

``WriteAheadLog`` forms groups on the event loop; this writes one group with a single
``write()`` per segment touched, seals a segment where the group says to cut (fdatasync,
then the next segment is created durably), and ends with one ``fdatasync()`` when the policy
asks for it. It runs in a worker thread, one group at a time, and owns the file descriptor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shardkv.cluster.durable_file import fdatasync
from shardkv.node.wal.segment import SegmentHeader, create_segment, write_all


@dataclass(frozen=True, slots=True)
class GroupResult:
    created: list[tuple[SegmentHeader, Path, int]]  # (header, path, size as created)
    written: list[int]  # bytes into the segment active before, then into each created one
    sync_seconds: float


class SegmentWriter:
    """Appends to one segment file at a time. Not thread-safe: one caller at a time."""

    def __init__(self, directory: Path, path: Path) -> None:
        self.directory = directory
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def reopen(self, path: Path) -> None:
        self.close()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def write_group(self, parts: Sequence[bytes | SegmentHeader], sync: bool) -> GroupResult:
        """Write framed records in order; a ``SegmentHeader`` among them means: seal the
        current segment and continue in a new one with that header."""
        created: list[tuple[SegmentHeader, Path, int]] = []
        written: list[int] = []
        chunk: list[bytes] = []
        for part in parts:
            if isinstance(part, bytes):
                chunk.append(part)
                continue
            data = b"".join(chunk)
            write_all(self.fd, data)
            fdatasync(self.fd)  # a sealed segment is complete on disk, whatever the policy
            written.append(len(data))
            chunk = []
            path, size, _ = create_segment(self.directory, part)
            self.reopen(path)
            created.append((part, path, size))
        data = b"".join(chunk)
        write_all(self.fd, data)
        written.append(len(data))
        seconds = self.sync() if sync else 0.0
        return GroupResult(created, written, seconds)

    def sync(self) -> float:
        """fdatasync the active segment; returns how long it took."""
        started = time.perf_counter()
        fdatasync(self.fd)
        return time.perf_counter() - started

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
