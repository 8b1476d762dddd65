"""What a replica does with what its primary sends: the log and state it keeps in step.

``ReplicaTarget`` is the small surface the replication stream needs from a node's storage:
append entries durably and apply them, drop a diverged suffix, start over from a snapshot.
``EngineReplicaLog`` implements it over a ``WriteAheadLog`` and an ``Engine`` directly (the
unit tests use it); ``StoreReplicaTarget`` over the node's running Store.

Why a suffix can be dropped only above ``applied_lsn``: an engine cannot un-apply an entry.
A replica applies what it receives at once (its readers see the newest data it holds), so
rolling back below what it has applied means rebuilding the state: the stream then asks the
primary for a snapshot instead. A returning old primary is the common case the other way:
its unacknowledged suffix was never applied (the commit gate held it back), so it truncates
its log and follows.

Installing a snapshot is ordered for crashes: the file is received under a staging name and
verified, then the log restarts at ``lsn + 1``, then the file is renamed into the snapshot
directory, then the engine loads it. A crash between the restart and the rename leaves a log
that starts after a state nobody holds: recovery refuses to start with a message naming the
gap (loud, never silently wrong), and the node is reseeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shardkv.cluster.durable_file import ensure_dir, install
from shardkv.node.storage.engines.engine import Engine, SnapshotRow
from shardkv.node.storage.snapshots.snapshot import SnapshotMeta, read_snapshot, snapshot_name
from shardkv.node.storage.snapshots.transfer import receive_snapshot
from shardkv.node.testing import failpoints, negative_controls
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.write_ahead_log import WriteAheadLog

if TYPE_CHECKING:
    from shardkv.node.storage.store import Store

STAGING_DIR = "snapshot-incoming"


class CannotRollBack(Exception):
    """Truncating to an LSN below what is already applied: a snapshot is needed."""


class ReplicaTarget(Protocol):
    """The storage a replication stream drives. All LSNs are of the local log."""

    @property
    def last_lsn(self) -> int: ...

    @property
    def last_epoch(self) -> int: ...

    @property
    def applied_lsn(self) -> int: ...

    async def append(self, entries: Sequence[WalEntry]) -> None:
        """Make ``entries`` (which continue the log) durable and applied before returning."""

    async def truncate_after(self, lsn: int) -> None:
        """Drop every entry above ``lsn``; ``CannotRollBack`` if ``lsn < applied_lsn``."""

    async def install_snapshot(self, chunks: AsyncIterable[bytes], lsn: int, epoch: int) -> None:
        """Replace the whole state with the snapshot streamed in ``chunks``; the log then
        continues at ``lsn + 1``."""


class EngineReplicaLog:
    """``ReplicaTarget`` over a WAL and an engine (no Store): see the module docstring."""

    def __init__(self, wal: WriteAheadLog, engine: Engine, snapshot_dir: Path) -> None:
        self.wal = wal
        self.engine = engine
        self.snapshot_dir = Path(snapshot_dir)

    @property
    def last_lsn(self) -> int:
        return self.wal.last_lsn

    @property
    def last_epoch(self) -> int:
        return self.wal.last_epoch

    @property
    def applied_lsn(self) -> int:
        return self.engine.applied_lsn

    async def append(self, entries: Sequence[WalEntry]) -> None:
        await self.wal.append_many(entries)
        for entry in entries:
            await self.engine.apply(entry)

    async def truncate_after(self, lsn: int) -> None:
        if lsn < self.engine.applied_lsn:
            raise CannotRollBack(f"entries up to {self.engine.applied_lsn} are applied; "
                                 f"cannot keep only up to {lsn}")
        await self.wal.truncate_after(lsn)

    async def install_snapshot(self, chunks: AsyncIterable[bytes], lsn: int, epoch: int) -> None:
        meta = await stage_and_install(self.snapshot_dir, chunks, lsn, epoch, self.wal)
        await self.engine.load(snapshot_rows(meta), lsn)


class StoreReplicaTarget:
    """``ReplicaTarget`` over the node's running Store (``truncate_log_after`` and
    ``install_snapshot`` are the Store's replica surface)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def last_lsn(self) -> int:
        return self.store.wal.last_lsn

    @property
    def last_epoch(self) -> int:
        return self.store.wal.last_epoch

    @property
    def applied_lsn(self) -> int:
        return self.store.applied_lsn

    async def append(self, entries: Sequence[WalEntry]) -> None:
        if not entries:
            return
        store = self.store
        if entries[-1].epoch > store.epoch:
            store.epoch = entries[-1].epoch
        if negative_controls.ENABLED:  # TEST ONLY (testing/negative_controls.py)
            entries = [negative_controls.replica_entry(entry) for entry in entries]
        await store.submit_replicated_batch(entries)

    async def truncate_after(self, lsn: int) -> None:
        if lsn < self.store.applied_lsn:
            raise CannotRollBack(f"applied up to {self.store.applied_lsn}, asked to keep {lsn}")
        try:
            await self.store.truncate_log_after(lsn)
        except ValueError as exc:
            raise CannotRollBack(str(exc)) from None

    async def install_snapshot(self, chunks: AsyncIterable[bytes], lsn: int, epoch: int) -> None:
        store = self.store
        meta = await stage_and_install(store.config.snapshot_dir, chunks, lsn, epoch, store.wal)
        await store.install_snapshot(meta)


async def stage_and_install(
    snapshot_dir: Path, chunks: AsyncIterable[bytes], lsn: int, epoch: int, wal: WriteAheadLog
) -> SnapshotMeta:
    """Receive and verify a snapshot, restart ``wal`` after it, then install the file (the
    crash-ordered part of ``install_snapshot``, shared with the Store's replica surface)."""
    staging = Path(snapshot_dir) / STAGING_DIR
    staged = await receive_snapshot(staging, lsn, chunks)
    if failpoints.ARMED:
        await failpoints.hit("snapshot_before_install")
    await wal.restart_at(lsn + 1, epoch)
    final = Path(snapshot_dir) / snapshot_name(lsn)
    await asyncio.to_thread(_move_into_place, staged.path, final)
    return SnapshotMeta(final, staged.lsn, staged.epoch, staged.count)


def _move_into_place(staged: Path, final: Path) -> None:
    ensure_dir(final.parent)
    install(staged, final)


def snapshot_rows(meta: SnapshotMeta) -> Iterator[SnapshotRow]:
    return read_snapshot(meta.path)
