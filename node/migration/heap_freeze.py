"""Keep the cyclic GC's full collections off a node's heap while a migration runs.

Why: a full collection walks every object the GC tracks, and a node holds hundreds of
thousands of them: the replication tail keeps the newest entries and their mutations (up to
64 MB; after the bench's bulk load, every mutation of the load), and a migration adds a
mutation per key it imports or deletes. Full collections paused a node for 115-250 ms on
this 2-core machine, and with a copy running they come every few hundred thousand objects
(docs/resharding.md, "Where the copy's time goes").

So, while this node takes part in a running migration: ``gc.freeze()`` at the start moves
every object tracked at that moment into a permanent generation that collections skip, and
after each batch the node writes for the migration (an import on a target, a clean-up entry
on a source) ``refreeze`` does it again for what the batch left alive, after a collection of
the two young generations (cheap: at most a few thousand objects) so that the garbage of
the batch's requests is collected, not frozen. ``gc.unfreeze()`` gives everything back to
the oldest generation when no migration runs here any more.

The price: cyclic garbage that had already reached the oldest generation when it was frozen
waits until the unfreeze (objects freed by reference counting are freed as always). The
status counts the collections and their time (``gc``), which is how the effect is measured.
``SHARDKV_MIGRATION_GC_FREEZE=0`` turns it off (the collections are still counted).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

from shardkv.cluster.structured_log import log_fields

logger = logging.getLogger(__name__)

ENABLED = (os.environ.get("SHARDKV_MIGRATION_GC_FREEZE") or "1") != "0"


class HeapFreeze:
    """Frozen while this node takes part in a running migration (one at a time)."""

    def __init__(self, enabled: bool = ENABLED) -> None:
        self.enabled = enabled
        self.migration: str | None = None  # the running migration this node takes part in
        self.frozen = False
        self.collections = [0, 0, 0]  # per generation, since the migration began here
        self.gc_seconds = 0.0
        self._began = 0.0

    def follow(self, migration_id: str | None) -> None:
        """``migration_id``: the running migration this node takes part in, or None."""
        if migration_id == self.migration:
            return
        if self.migration is not None:
            self._release()
        if migration_id is not None:
            self.migration = migration_id
            self.collections, self.gc_seconds = [0, 0, 0], 0.0
            gc.callbacks.append(self._timed)
            if self.enabled:
                # No gc.collect() first: that full collection is the very pause this avoids.
                gc.freeze()
                self.frozen = True
                logger.info("heap frozen for the migration", extra=log_fields(
                    migration=migration_id, frozen=gc.get_freeze_count()))

    def refreeze(self) -> None:
        """After a batch written for the migration: freeze what it left alive."""
        if self.frozen:
            gc.collect(1)
            gc.freeze()

    def status(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "collections": list(self.collections),
                "gc_s": round(self.gc_seconds, 3)}

    def _release(self) -> None:
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)
        if self.frozen:
            gc.unfreeze()
            self.frozen = False
        self.migration = None

    def _timed(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.gc_seconds += time.perf_counter() - self._began
        self.collections[info["generation"]] += 1
