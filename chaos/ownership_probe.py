"""What each shard's primary holds, read from its store after the run (the ownership
checker's input, ``chaos/checkers/ownership.py``).

A live node answers ``STALE_MAP`` for a key another shard owns, whether or not it still holds
a copy, and has no scan route; so the probe reads the stores of the final map's primaries
once the cluster is stopped: each is opened as the node opens it (WAL replay over the latest
snapshot, the TTL sweeper off) and asked for every key the workloads touched. The final map
(taken before the stop) gives the shards, their primaries and the ring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.ring import shard_for_key
from shardkv.node.storage.store import Store
from shardkv.node.storage.store_model import StoreConfig

log = logging.getLogger(__name__)


async def keys_held(data_dir: str, engine: str, keys: Iterable[str]) -> set[str]:
    """The keys of ``keys`` that the stopped node's store in ``data_dir`` holds."""
    store = await Store.open(StoreConfig(data_dir=Path(data_dir), engine=engine,
                                         ttl_sweep_interval_s=0))
    try:
        return {k for k in keys if await store.get(k.encode()) is not None}
    finally:
        await store.close()


async def probe_ownership(final_map: dict[str, Any], data_dir_of: Callable[[str], str],
                          engine: str, keys: Iterable[str],
                          ) -> tuple[dict[str, set[str] | None], Callable[[str], str],
                                     str | None]:
    """(holdings per shard, the final ring's owner function, the state of a migration still
    in the map or None)."""
    keys = sorted(set(keys))
    holdings: dict[str, set[str] | None] = {}
    for shard, info in sorted((final_map.get("shards") or {}).items()):
        primary = info.get("primary")
        if not primary:
            holdings[shard] = None
            continue
        try:
            holdings[shard] = await keys_held(data_dir_of(str(primary)), engine, keys)
        except Exception:
            log.exception("ownership probe: cannot scan %s (primary of %s)", primary, shard)
            holdings[shard] = None
    ring = RingSpec.from_dict(dict(final_map.get("ring") or {}))
    migration = final_map.get("migration")
    state = migration.get("state") if isinstance(migration, dict) else None
    if state is None and any(isinstance(r, dict) and r.get("leftovers")
                             for r in final_map.get("migrations") or []):
        # An aborted remove or reweight whose targets are still deleting their partial
        # copies: two copies are legal until that is done.
        state = "cleaning leftovers"
    return holdings, (lambda key: shard_for_key(ring, key.encode())), state


async def check_run_ownership(final_map: dict[str, Any], data_dir_of: Callable[[str], str],
                              engine: str, history: Any) -> Any:
    """The ownership check of a finished run: every key its operations touched, against
    what the final map's primaries hold (the cluster must be stopped)."""
    from shardkv.chaos.checkers.ownership import check_ownership

    keys = {str(op.key) for op in history.operations() if op.key is not None}
    holdings, owner_of, state = await probe_ownership(final_map, data_dir_of, engine, keys)
    return check_ownership(keys, holdings, owner_of, migration_state=state,
                           events=history.nemesis)
