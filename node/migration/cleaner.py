"""After the flip, a source primary deletes the keys it no longer owns.

Deletes go through the WAL (``Store.delete_moved``: a DELETE per key with the version it
removes, as ``mdelete`` logs it, without its per-key checks, limit and lock), so the shard's
replicas delete the same keys, ``DELETE_KEYS`` per entry, each entry paced by the copy's
adaptive throttle (``throttle.py``; the clean-up adopts the copy's baseline when it runs
where the copy ran) and by an optional fixed pause. A full pass that deletes nothing means
done (an expired key is the TTL sweeper's).

A pass reads the shard's keys a chunk at a time and asks which it owns all at once
(``owned``: one C bisection of each key's digest, ``arcs.owned_by``), and never decodes a row
(``Store.migration_keys``): the pass covers the whole shard, of which a third moved.
``clean_clock`` in the status says where the time went (selecting, the throttle, the
deletes up to applied, the pauses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from shardkv.cluster.structured_log import log_fields
from shardkv.node.migration.loop_slices import SLICE_KEYS
from shardkv.node.migration.stage_clock import StageClock
from shardkv.node.migration.throttle import LoopLagThrottle
from shardkv.node.storage.sessions import is_reserved
from shardkv.node.storage.store import Store

logger = logging.getLogger(__name__)

# 1000 deletes and 5 ms per entry: with a foreground the clean-up is paced by the throttle
# anyway (14 s either way in one pair of runs), and its get p99 was 2.67x with these
# against 3.04-3.64x with 4000 and no pause (other hours: not conclusive, so the cautious
# one). With no foreground, 4000 and 0 took 4-8 s where these take 13 (docs/resharding.md).
DELETE_KEYS = int(os.environ.get("SHARDKV_MIGRATION_CLEAN_KEYS") or 1000)
PAUSE_S = float(os.environ.get("SHARDKV_MIGRATION_CLEAN_PAUSE_S") or 0.005)


class MovedKeyCleaner:
    def __init__(self, store: Store, migration_id: str,
                 owned: Callable[[list[bytes]], list[bool]],
                 after_entry: Callable[[], None] | None = None,
                 activity: Callable[[], int] | None = None) -> None:
        self.store = store
        self.after_entry = after_entry  # called after each delete entry (heap_freeze.py)
        self.migration_id = migration_id
        self.owned = owned  # keys -> whether this shard owns each
        self.deleted = 0
        self.passes = 0
        self.done = False
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.throttle = LoopLagThrottle(activity=activity)  # activity: foreground requests
        # Where the clean-up's time goes: selecting (hashing) the keys, the throttle, the
        # deletes (ordering the entry up to applied: fsync included) and the fixed pauses.
        self.clock = StageClock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"clean-{self.migration_id}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def status(self) -> dict[str, Any]:
        return {"migration": self.migration_id, "deleted": self.deleted, "done": self.done,
                "passes": self.passes, "error": self.error, "running": self.running,
                "throttle": self.throttle.status(), "clean_clock": self.clock.status()}

    async def _run(self) -> None:
        self.throttle.start()  # watches the loop before the first delete: its baseline
        try:
            while True:
                found = await self._one_pass()
                self.passes += 1
                self.clock.mark()
                if not found:
                    self.done = True
                    logger.info("moved keys cleaned", extra=log_fields(
                        migration=self.migration_id, deleted=self.deleted))
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("cleaning failed", extra=log_fields(
                migration=self.migration_id, error=self.error))
        finally:
            await self.throttle.stop()

    async def _one_pass(self) -> int:
        """Delete what this shard does not own; returns how many keys were deleted (an
        expired key is left to the TTL sweeper, as ``delete_moved`` leaves it)."""
        deleted = 0
        doomed: list[bytes] = []
        with self.clock.waited("calibrate"):
            await self.throttle.calibrate()
        self.clock.start()
        # The keys this shard does not own, selected a chunk at a time (the same live table
        # the copy reads: a deleted key simply stops showing), rows never decoded.
        async for keys in self.store.migration_keys(self._doomed, SLICE_KEYS):
            doomed.extend(keys)
            while len(doomed) >= DELETE_KEYS:
                deleted += await self._delete(doomed[:DELETE_KEYS])
                del doomed[:DELETE_KEYS]
        if doomed:
            deleted += await self._delete(doomed)
        return deleted

    def _doomed(self, keys: list[bytes]) -> list[bool]:
        """Keys this shard does not own. Never a reserved row: exactly-once session records
        are the node's state, not data (a scan never lists them); deleting one would let a
        retried request apply twice, and the next write would only bring it back."""
        with self.clock.timed("select"):
            return [not owned and not is_reserved(key)
                    for key, owned in zip(keys, self.owned(keys), strict=True)]

    async def _delete(self, keys: list[bytes]) -> int:
        clock = self.clock
        with clock.waited("throttle"):
            await self.throttle.wait()
        with clock.waited("delete"):
            deleted = await self.store.delete_moved(keys)
        self.deleted += deleted
        if self.after_entry is not None:
            self.after_entry()
        if PAUSE_S:
            with clock.waited("pause"):
                await asyncio.sleep(PAUSE_S)
        return deleted
