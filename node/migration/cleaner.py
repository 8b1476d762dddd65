"""After the flip, a source primary deletes the keys it no longer owns.

Deletes go through the WAL (``Store.mdelete``), so the shard's replicas delete the same keys,
``DELETE_KEYS`` per entry with a pause between them (the foreground load keeps its share of
the disk and the loop). A full pass that finds nothing left to delete means done.

A pass reads ``PAGE`` keys at a time and asks who owns them all at once (``owned``: one hash
per key, no call per key): the pass reads the whole shard, of which a third moved, and one
lookup through the ring per key used to cost more than the deletes themselves. Deletes are
gathered across pages into full entries: a third of a page per entry was three times the
entries, each with its own fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.store import Store

logger = logging.getLogger(__name__)

PAGE = 2000
DELETE_KEYS = 1000  # at most MAX_BATCH_OPS
PAUSE_S = 0.005


class MovedKeyCleaner:
    def __init__(self, store: Store, migration_id: str,
                 owned: Callable[[list[bytes]], list[bool]]) -> None:
        self.store = store
        self.migration_id = migration_id
        self.owned = owned  # keys -> whether this shard owns each
        self.deleted = 0
        self.passes = 0
        self.done = False
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

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
                "passes": self.passes, "error": self.error, "running": self.running}

    async def _run(self) -> None:
        try:
            while True:
                found = await self._one_pass()
                self.passes += 1
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

    async def _one_pass(self) -> int:
        found = 0
        cursor: bytes | None = None
        doomed: list[bytes] = []
        while True:
            page = await self.store.scan(cursor=cursor, limit=PAGE)
            keys = [key for key, _ in page.items]
            doomed.extend(itertools.compress(keys, [not o for o in self.owned(keys)]))
            while len(doomed) >= DELETE_KEYS or (doomed and page.cursor is None):
                found += await self._delete(doomed[:DELETE_KEYS])
                del doomed[:DELETE_KEYS]
            if page.cursor is None:
                return found
            cursor = page.cursor

    async def _delete(self, keys: list[bytes]) -> int:
        count, _ = await self.store.mdelete(keys)
        self.deleted += count
        await asyncio.sleep(PAUSE_S)
        return len(keys)
