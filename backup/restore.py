"""``shardkv backup restore``: a backup (and, with ``--at``, archived WAL) into a running
cluster of any shape.

Order, so that nothing is ever half-restored:

1. the key is checked against the manifest's key id, and every file to be read (shard files,
   archived chunks) against its recorded size and SHA-256, before anything is written;
2. the target must be empty (``--force`` empties it first);
3. each target shard's LSN floor is raised above every version in the backup (the floor a
   resharding target gets, ``node/migration/floor.py``), so a restored key's version is
   greater than the one it had: a client holding an old version cannot compare-and-swap
   onto restored data by accident;
4. rows are placed by the target's own ring (whatever its shard count) and posted in
   batches to each shard's primary (``POST /admin/backup/import``, ``shard_writer.py``):
   one log entry per batch, expiry times kept exactly;
5. with ``--at``, each shard's archived entries are replayed in log order up to the time
   (``pitr.py``), in batches where the last write of a key wins;
6. if anything fails after the first write, the cluster is emptied again and the error says
   so (or, if even that fails, says what is left to do).

Restore expects no other writers meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from shardkv.backup.cluster_access import fetch_map, post_internal
from shardkv.backup.pitr import RestorePlan
from shardkv.backup.progress import ProgressLine
from shardkv.backup.repository.destination import Destination
from shardkv.backup.repository.encryption import check_key
from shardkv.backup.repository.errors import BackupError
from shardkv.backup.repository.record_stream import StoredFile, check_stored, read_records
from shardkv.backup.repository.wal_archive import DELETE, PUT
from shardkv.backup.shard_writer import ShardWriter
from shardkv.client import Client

BATCH_KEYS = 1000
MAX_INFLIGHT = 4
WIPE_PAGE = 1000

# A key's final state within one batch: (value, expires_at) for a put, None for a delete.
Change = tuple[bytes, float | None] | None


class RestoreFailed(BackupError):
    """The restore stopped after writing; the message says what state the cluster is in."""


@dataclass(frozen=True)
class RestoreReport:
    backup_id: str
    at: float | None
    keys: int
    bytes: int
    entries_replayed: int
    seconds: float
    floor: int

    def to_dict(self) -> dict[str, Any]:
        return {"backup": self.backup_id, "at": self.at, "keys": self.keys,
                "bytes": self.bytes, "entries_replayed": self.entries_replayed,
                "seconds": round(self.seconds, 3), "version_floor": self.floor,
                "keys_per_s": round(self.keys / self.seconds, 1) if self.seconds else None,
                "mb_per_s": round(self.bytes / self.seconds / 1e6, 3) if self.seconds else None}


def verify_inputs(dest: Destination, plan: RestorePlan, key: bytes | None,
                  progress: ProgressLine) -> list[StoredFile]:
    manifest = plan.manifest
    check_key(manifest.key_id, key, f"backup {manifest.backup_id}")
    files = [s.file for _, s in sorted(manifest.shards.items())]
    for replay in plan.replays.values():
        for chunk in replay.chunks:
            check_key(chunk.key_id, key, f"archived WAL {chunk.file.name}")
            files.append(chunk.file)
    started = time.monotonic()
    checked = 0
    for stored in files:
        check_stored(dest, stored)
        checked += stored.size
        progress.update(f"verify {len(files)} files", -1, checked, started)
    progress.end()
    return files


async def first_key(kv: Client) -> bytes | str | None:
    async for item in kv.scan(prefix=b"", limit=1):
        return item.key
    return None


async def wipe(kv: Client) -> int:
    deleted = 0
    while True:
        keys = [item.key async for item in kv.scan(prefix=b"", limit=WIPE_PAGE)]
        if not keys:
            return deleted
        deleted += await kv.mdelete(keys)


async def _apply(writer: ShardWriter, changes: dict[bytes, Change]) -> None:
    """One batch (distinct keys, so its writes may land in any order)."""
    now = time.time()
    records: list[list[Any]] = []
    for k, change in changes.items():
        if change is None or (change[1] is not None and change[1] <= now):
            # Deleted, or expired by now: as the cluster would have deleted it.
            records.append([DELETE, k, b"", None])
        else:
            records.append([PUT, k, change[0], change[1]])
    await writer.write(records)


def _groups(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last shorter); itertools.batched is 3.12+."""
    iterator = iter(items)
    while group := list(itertools.islice(iterator, size)):
        yield group


def _row_batches(rows: Iterable[Any]) -> Iterator[dict[bytes, Change]]:
    for chunk in _groups(rows, BATCH_KEYS):
        yield {bytes(r[0]): (bytes(r[1]), r[2]) for r in chunk}


def _entry_batches(records: Iterable[Any], from_lsn: int, at: float,
                   counter: list[int]) -> Iterator[dict[bytes, Change]]:
    """Entries after ``from_lsn`` up to the first stamped after ``at``, as batches of final
    key states (a later write of a key in the same batch replaces the earlier)."""
    batch: dict[bytes, Change] = {}
    last = from_lsn
    for lsn, _epoch, ts, mutations in records:
        if lsn <= last:
            continue  # overlapping chunks, or entries the base backup holds
        if lsn != last + 1:
            raise BackupError(f"archived WAL jumps from LSN {last} to {lsn}")
        if ts > at:
            break
        last = lsn
        counter[0] += 1
        for kind, key, value, expires_at in mutations:
            batch[bytes(key)] = (bytes(value), expires_at) if kind == PUT else None
            if kind not in (PUT, DELETE):
                raise BackupError(f"unknown mutation kind {kind} at LSN {lsn}")
        if len(batch) >= BATCH_KEYS:
            yield batch
            batch = {}
    if batch:
        yield batch


async def _drive(writer: ShardWriter, batches: Iterator[dict[bytes, Change]], *, ordered: bool,
                 progress: ProgressLine, label: str, totals: list[int],
                 started: float) -> None:
    """Apply batches pulled (in a thread: decoding is CPU and I/O) from ``batches``;
    concurrently unless ``ordered``."""
    inflight: set[asyncio.Task[None]] = set()
    sentinel: dict[bytes, Change] = {}
    try:
        while True:
            batch = await asyncio.to_thread(next, batches, sentinel)
            if batch is sentinel:
                break
            totals[0] += len(batch)
            totals[1] += sum(len(k) + (len(c[0]) if c else 0) for k, c in batch.items())
            if ordered:
                await _apply(writer, batch)
            else:
                inflight.add(asyncio.create_task(_apply(writer, batch)))
                if len(inflight) >= MAX_INFLIGHT:
                    done, inflight = await asyncio.wait(inflight,
                                                        return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
            progress.update(label, totals[0], totals[1], started)
        if inflight:
            await asyncio.gather(*inflight)
            inflight = set()
    finally:
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)


def _raise_floors(coordinators: list[str], floor: int, progress: ProgressLine) -> None:
    cluster_map = fetch_map(coordinators)
    for shard, info in sorted(cluster_map.get("shards", {}).items()):
        node = cluster_map.get("nodes", {}).get(info.get("primary") or "") or {}
        try:
            if not node.get("url"):
                raise BackupError("no primary in the map")
            post_internal(node["url"], "/internal/migration/floor", {"lsn": floor})
        except BackupError as exc:
            progress.note(f"warning: shard {shard}: could not raise the version floor to "
                          f"{floor} ({exc}); restored versions may be lower than before")


async def restore(dest: Destination, plan: RestorePlan, key: bytes | None,
                  coordinators: list[str], *, force: bool,
                  progress: ProgressLine) -> RestoreReport:
    manifest = plan.manifest
    await asyncio.to_thread(verify_inputs, dest, plan, key, progress)
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=120.0)
    async with Client(coordinators, timeout=30.0) as kv, \
            aiohttp.ClientSession(timeout=timeout) as session:
        writer = ShardWriter(coordinators, session)
        existing = await first_key(kv)
        if existing is not None:
            if not force:
                raise BackupError(f"the target cluster is not empty (it holds {existing!r}, "
                                  "maybe more): restore into an empty cluster, or pass "
                                  "--force to empty it first")
            progress.note(f"--force: emptying the target cluster ({existing!r} ...)")
            await wipe(kv)
        floor = max([manifest.max_version] + [c.last_lsn for r in plan.replays.values()
                                              for c in r.chunks]) + 1
        await asyncio.to_thread(_raise_floors, coordinators, floor, progress)
        totals = [0, 0]
        replayed = [0]
        try:
            for _shard, base in sorted(manifest.shards.items()):
                rows = read_records(dest, base.file, key)
                await _drive(writer, _row_batches(rows), ordered=False, progress=progress,
                             label=f"restore {manifest.backup_id}", totals=totals,
                             started=started)
            for shard, replay in sorted(plan.replays.items()):
                assert plan.at is not None
                records = itertools.chain.from_iterable(
                    read_records(dest, c.file, key) for c in replay.chunks)
                await _drive(writer, _entry_batches(records, replay.from_lsn, plan.at,
                                                    replayed),
                             ordered=True, progress=progress,
                             label=f"replay {shard}", totals=totals, started=started)
            progress.end()
        except BaseException as exc:
            progress.end()
            raise RestoreFailed(f"restore failed: {exc}; {await _undo(kv)}") from exc
    keys = sum(s.keys for s in manifest.shards.values())
    return RestoreReport(manifest.backup_id, plan.at, keys, totals[1], replayed[0],
                         time.monotonic() - started, floor)


async def _undo(kv: Client) -> str:
    try:
        await asyncio.wait_for(wipe(kv), timeout=120.0)
    except Exception as exc:  # reported; the original error propagates
        return (f"emptying the cluster again failed too ({exc!r}): it may hold part of the "
                "backup; run the restore again with --force")
    return "the cluster was emptied again (nothing restored)"
