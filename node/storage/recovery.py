"""Opening a store's files: the newest valid snapshot into the engine, then the WAL after it.

The rule is that recovery never silently loses an acknowledged write:

- The engine starts from whichever is newer: its own durable state (SQLite records the LSN
  it holds in the same transaction as the data) or the newest snapshot that passes its
  checksum. A snapshot older than the SQLite state is ignored; a newer one replaces it.
- The WAL is replayed from the entry after that LSN. If the log no longer holds that entry
  (it was removed behind a snapshot that is now missing or damaged), the writes in between
  exist nowhere: recovery stops with ``RecoveryError`` naming the gap rather than starting
  with a hole in the history.
- A WAL that ends *before* the engine's LSN (everything after a snapshot was lost because
  the log ran with ``fsync=never``/``interval`` and the machine crashed, or a fresh log next
  to a restored snapshot) restarts at the engine's LSN + 1, so new writes never reuse an LSN
  the state already reflects. That is logged as a warning: it is only possible when the log
  was not synced.
- ``WalCorruption`` from the log propagates unchanged: it names the file and the offset.

Reading the snapshot and the log is blocking file I/O and decompression, so it runs in worker
threads in chunks; the event loop stays free to answer health checks meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from shardkv.cluster.errors import InternalError
from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.engines.engine import Engine
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.storage.engines.sqlite import SqliteEngine
from shardkv.node.storage.snapshots.snapshot import (
    SnapshotMeta,
    latest_valid_snapshot,
    read_snapshot,
)
from shardkv.node.storage.store_model import RecoveryReport, StoreConfig
from shardkv.node.wal.write_ahead_log import LsnCompacted, WriteAheadLog

logger = logging.getLogger(__name__)

_REPLAY_CHUNK = 2048


class RecoveryError(InternalError):
    """The files on disk cannot be turned back into every acknowledged write."""


async def open_engine(config: StoreConfig) -> Engine:
    if config.engine == "sqlite":
        return await SqliteEngine.open(
            config.sqlite_dir,
            flush_entries=config.sqlite_flush_entries,
            flush_interval_s=config.sqlite_flush_interval_s,
        )
    return await MemoryEngine.open()


async def recover(
    config: StoreConfig,
) -> tuple[WriteAheadLog, Engine, SnapshotMeta | None, RecoveryReport]:
    """Open the engine and the WAL of ``config.data_dir`` and bring the engine up to the end
    of the log. On failure everything opened here is closed again."""
    started = time.perf_counter()
    engine = await open_engine(config)
    wal: WriteAheadLog | None = None
    try:
        snapshot = await asyncio.to_thread(latest_valid_snapshot, config.snapshot_dir)
        loaded_snapshot = snapshot is not None and snapshot.lsn > engine.applied_lsn
        if loaded_snapshot:
            assert snapshot is not None
            await engine.load(read_snapshot(snapshot.path), snapshot.lsn)
        base_lsn = engine.applied_lsn
        wal = await WriteAheadLog.open(config.wal_dir, config.wal)
        replayed = await _replay(wal, engine, config)
        report = RecoveryReport(
            engine=engine.name,
            snapshot_lsn=snapshot.lsn if loaded_snapshot and snapshot else None,
            snapshot_keys=snapshot.count if loaded_snapshot and snapshot else 0,
            engine_lsn_before_replay=base_lsn,
            replayed_entries=replayed,
            last_lsn=max(wal.last_lsn, engine.applied_lsn),
            seconds=time.perf_counter() - started,
        )
    except BaseException:
        if wal is not None:
            await wal.close()
        await engine.close()
        raise
    logger.info(
        "store recovered",
        extra=log_fields(
            data_dir=str(config.data_dir),
            engine=report.engine,
            snapshot_lsn=report.snapshot_lsn,
            snapshot_keys=report.snapshot_keys,
            replayed_entries=report.replayed_entries,
            last_lsn=report.last_lsn,
            seconds=round(report.seconds, 4),
        ),
    )
    return wal, engine, snapshot, report


async def _replay(wal: WriteAheadLog, engine: Engine, config: StoreConfig) -> int:
    start = engine.applied_lsn
    if wal.last_lsn < start:
        if wal.last_lsn > 0:
            logger.warning(
                "the WAL ends before the engine state; restarting the log after it "
                "(only possible when the log ran without fsync)",
                extra=log_fields(wal_last_lsn=wal.last_lsn, engine_lsn=start),
            )
        await wal.restart_at(start + 1, max(config.epoch, wal.last_epoch))
        return 0
    try:
        entries = wal.read_wire_from(start + 1, _wire_entry)
    except LsnCompacted as exc:
        raise RecoveryError(
            f"the state ends at lsn {start} but the WAL in {config.wal_dir} starts at "
            f"{wal.first_lsn}: entries {start + 1}..{wal.first_lsn - 1} are missing "
            "(a snapshot that covered them is gone or damaged)",
            engine_lsn=start,
            wal_first_lsn=wal.first_lsn,
        ) from exc
    replayed = 0
    while chunk := await asyncio.to_thread(_take, entries, _REPLAY_CHUNK):
        for raw in chunk:
            try:
                await engine.apply_wire(raw)
            except (ValueError, TypeError) as exc:
                raise RecoveryError(f"WAL entry {raw[0]} cannot be applied: {exc}",
                                    lsn=raw[0]) from exc
        replayed += len(chunk)
    if engine.applied_lsn != wal.last_lsn:
        raise RecoveryError(
            f"WAL replay stopped at lsn {engine.applied_lsn}, the log ends at {wal.last_lsn}"
        )
    return replayed


def _wire_entry(raw: list[Any]) -> list[Any]:
    """An entry's msgpack form, checked for its shape (the engine checks the rest)."""
    if type(raw) is not list or len(raw) != 4 or type(raw[3]) is not list:
        raise ValueError("an entry is a list [lsn, epoch, ts, mutations]")
    return raw


def _take(entries: Iterator[list[Any]], count: int) -> list[list[Any]]:
    return list(islice(entries, count))
