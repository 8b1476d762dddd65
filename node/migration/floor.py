"""Raise an empty target shard's LSN floor, so every version it writes for an imported key is
above any version that key had on its source (docs/resharding.md, "Target floor").

The floor is an empty snapshot installed at the floor LSN: the log restarts after it, and the
shard's replicas, now behind the primary's oldest entry, catch up from that snapshot as any
lagging replica does. It is only done while the store holds no key: it would otherwise keep
the keys' (lower) versions, which is fine, but the snapshot would have to carry them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from shardkv.cluster.errors import VersionMismatch
from shardkv.node.storage.engines.engine import SnapshotRow
from shardkv.node.storage.snapshots.snapshot import write_snapshot
from shardkv.node.storage.store import Store


async def _no_rows() -> AsyncIterator[SnapshotRow]:
    return
    yield  # an async generator that yields nothing


async def raise_lsn_floor(store: Store, floor: int) -> int:
    """Make ``store.last_lsn >= floor``; idempotent. Returns the LSN the log is at."""
    if store.last_lsn >= floor:
        return store.last_lsn
    await store.barrier()
    if store.key_count:
        raise VersionMismatch(
            f"the target shard holds {store.key_count} keys; its LSN floor can only be raised "
            f"while it is empty", keys=store.key_count)
    meta = await write_snapshot(store.config.snapshot_dir, floor, store.epoch, _no_rows())
    await store.install_snapshot(meta)
    return store.last_lsn
