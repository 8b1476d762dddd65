"""After the flip, a source primary deletes the keys it no longer owns.

Deletes go through the WAL (``Store.mdelete``), so the shard's replicas delete the same keys,
in pages of ``PAGE`` keys with a pause between them (the foreground load keeps its share of
the disk and the loop). A full pass that finds nothing left to delete means done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.store import Store

logger = logging.getLogger(__name__)

PAGE = 500
PAUSE_S = 0.005


class MovedKeyCleaner:
    def __init__(self, store: Store, migration_id: str, owns: Callable[[bytes], bool]) -> None:
        self.store = store
        self.migration_id = migration_id
        self.owns = owns
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
        while True:
            page = await self.store.scan(cursor=cursor, limit=PAGE)
            doomed = [key for key, _ in page.items if not self.owns(key)]
            if doomed:
                found += len(doomed)
                count, _ = await self.store.mdelete(doomed)
                self.deleted += count
                await asyncio.sleep(PAUSE_S)
            if page.cursor is None:
                return found
            cursor = page.cursor
