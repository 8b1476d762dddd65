"""Raise a target shard's LSN floor, so every version it writes for an imported key is above
any version that key had on its source (docs/resharding.md, "Target floor").

The floor is a snapshot installed at the floor LSN: the log restarts after it, and the
shard's replicas, now behind the primary's oldest entry, catch up from that snapshot as any
lagging replica does. The shard's whole state goes into that snapshot with its writes held
(``Store.jump_lsn``): nothing for the new shard of an add; for the targets of a remove or a
reweight, which hold keys and take writes, every key keeps its version, and
every later write, imported or not, gets a version above the floor. That is the "LSN jump":
the log format stays contiguous, the price is one snapshot of the target per migration.
"""

from __future__ import annotations

from shardkv.node.storage.store import Store


async def raise_lsn_floor(store: Store, floor: int) -> tuple[int, int | None]:
    """Make ``store.last_lsn >= floor``; idempotent. Returns the LSN the log is at and,
    when this call jumped, the last LSN before the jump (nothing was ever written between
    it and the floor: a watch that got everything up to it resumes at the floor)."""
    if store.last_lsn >= floor:
        return store.last_lsn, None
    lsn = await store.jump_lsn(floor)
    reset = store.watch_hub.last_reset
    return lsn, reset[0] if reset is not None and reset[1] == floor else None
