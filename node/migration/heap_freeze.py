"""Keep a node's old heap out of the cyclic GC's full collections while a migration runs.

Why: a full collection walks every object the GC tracks, and after a bulk load a node holds
hundreds of thousands of them (the replication tail's entries and their mutations, up to
64 MB): each full collection paused a node for 115-250 ms on this 2-core machine, and a
migration's copy and clean-up, which create a mutation per key, set them off every few
hundred thousand keys (docs/resharding.md, "Where the copy's time goes"). ``gc.freeze()``
moves every object tracked at that moment into a permanent generation that collections
skip; ``gc.unfreeze()`` gives them back when no migration runs on this node any more.

The price: cyclic garbage that already existed when the heap was frozen is not collected
until the unfreeze (objects freed by reference counting are freed as always). It is
bounded by what the node held at the start, and released at the end of the migration.
``SHARDKV_MIGRATION_GC_FREEZE=0`` turns it off.
"""

from __future__ import annotations

import gc
import logging
import os

from shardkv.cluster.structured_log import log_fields

logger = logging.getLogger(__name__)

ENABLED = (os.environ.get("SHARDKV_MIGRATION_GC_FREEZE") or "1") != "0"


class HeapFreeze:
    """Frozen while this node takes part in a running migration (one at a time)."""

    def __init__(self, enabled: bool = ENABLED) -> None:
        self.enabled = enabled
        self.migration: str | None = None  # the migration the heap is frozen for

    def follow(self, migration_id: str | None) -> None:
        """``migration_id``: the running migration this node takes part in, or None."""
        if not self.enabled or migration_id == self.migration:
            return
        if self.migration is not None:
            gc.unfreeze()
            self.migration = None
        if migration_id is not None:
            # No gc.collect() first: that full collection is the very pause this avoids.
            gc.freeze()
            self.migration = migration_id
            logger.info("heap frozen for the migration", extra=log_fields(
                migration=migration_id, frozen=gc.get_freeze_count()))
