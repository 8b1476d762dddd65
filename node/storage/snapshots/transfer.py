"""Moving a snapshot file between nodes in chunks (primary -> a replica too far behind).

The file is shipped as it is on disk, compressed and checksummed, so the receiver checks
exactly what the sender wrote: the sender verifies it before the first chunk, the receiver
writes the chunks to a temporary name and installs the file only once its checksums verify
and it is the snapshot it asked for. A transfer cut midway leaves nothing under a snapshot
name (``remove_old_snapshots`` later clears the temporary).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterator
from pathlib import Path
from typing import BinaryIO

from shardkv.cluster.durable_file import ensure_dir, install, sync_file
from shardkv.node.storage.snapshots.snapshot import (
    SnapshotCorrupt,
    SnapshotMeta,
    check_snapshot,
    snapshot_name,
)

DEFAULT_CHUNK_BYTES = 1 << 20


def iter_snapshot_chunks(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """The bytes of a snapshot file in chunks, after checking it (``SnapshotCorrupt`` if it
    is damaged: a primary never ships a bad snapshot). Blocking: pull it from a thread."""
    check_snapshot(path)
    with Path(path).open("rb") as f:
        while chunk := f.read(chunk_bytes):
            yield chunk


async def receive_snapshot(directory: Path, lsn: int, chunks: AsyncIterable[bytes]) -> SnapshotMeta:
    """Write ``chunks`` as the snapshot at ``lsn`` in ``directory`` and install it durably.

    Raises ``SnapshotCorrupt`` (and installs nothing) if what arrived is damaged, truncated,
    or a snapshot at another LSN."""
    directory = Path(directory)
    await asyncio.to_thread(ensure_dir, directory)
    final = directory / snapshot_name(lsn)
    tmp = final.with_name(final.name + ".recv.tmp")
    f = await asyncio.to_thread(tmp.open, "wb")
    try:
        async for chunk in chunks:
            await asyncio.to_thread(f.write, chunk)
        await asyncio.to_thread(_flush_and_close, f)
        meta = await asyncio.to_thread(check_snapshot, tmp)
        if meta.lsn != lsn:
            raise SnapshotCorrupt(tmp, f"received the snapshot at lsn {meta.lsn}, not {lsn}")
        await asyncio.to_thread(_install, tmp, final)
    except BaseException:
        await asyncio.to_thread(_discard, f, tmp)
        raise
    return SnapshotMeta(final, meta.lsn, meta.epoch, meta.count)


def _flush_and_close(f: BinaryIO) -> None:
    sync_file(f)
    f.close()


def _install(tmp: Path, final: Path) -> None:
    install(tmp, final)


def _discard(f: BinaryIO, tmp: Path) -> None:
    f.close()
    tmp.unlink(missing_ok=True)
