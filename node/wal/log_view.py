"""What a reader of the WAL sees: an immutable view of the segments, and reading through it.

Readers run in worker threads (replication catch-up, snapshots, backups, migration) while
the event loop appends. The log therefore publishes a ``LogView`` (its segments, the LSN up
to which entries are acknowledged, the sparse checkpoints) and replaces it as a whole after
every group; a reader takes one view and reads files through it, so it never sees a
half-updated segment list nor an entry that is written but not yet acknowledged.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shardkv.node.wal.model import LsnCompacted
from shardkv.node.wal.segment import Checkpoint, read_segment_records

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LogSegment:
    seq: int
    first_lsn: int
    path: Path
    size: int  # for the active segment: the acknowledged size


@dataclass(frozen=True, slots=True)
class LogView:
    """What readers may see, replaced as a whole so a reader thread gets a consistent copy."""

    segments: tuple[LogSegment, ...]
    acked_lsn: int
    checkpoints: dict[int, list[Checkpoint]]  # by segment seq; only the active one grows


def _checkpoint_lsn(checkpoint: Checkpoint) -> int:
    return checkpoint.lsn


def read_view(view: LogView, lsn: int, decode: Callable[[list[Any]], T]) -> Iterator[T]:
    """Each acknowledged entry of ``view`` with an LSN ``>= lsn``, oldest first, as
    ``decode`` makes it from the entry's msgpack list. Seeks to the nearest checkpoint
    instead of decoding a segment from its start. The caller has checked that ``lsn`` is
    still retained; a segment removed while reading raises ``LsnCompacted``."""
    segments = view.segments
    for i, seg in enumerate(segments):
        next_first = segments[i + 1].first_lsn if i + 1 < len(segments) else None
        if next_first is not None and next_first <= lsn:
            continue
        if seg.first_lsn > view.acked_lsn:
            return
        limit = seg.size if next_first is None else None
        checkpoints = view.checkpoints.get(seg.seq, ())
        at = bisect.bisect_right(checkpoints, lsn, key=_checkpoint_lsn)
        start = checkpoints[at - 1] if at else None
        try:
            yield from read_segment_records(seg.path, seg.first_lsn, lsn, decode, limit,
                                            start, until_lsn=view.acked_lsn)
        except FileNotFoundError as exc:
            raise LsnCompacted(f"segment {seg.path.name} was removed while reading") from exc
