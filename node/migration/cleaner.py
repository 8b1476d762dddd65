"""After the flip, a source primary deletes the keys it no longer owns.

Deletes go through the WAL (``Store.mdelete``), so the shard's replicas delete the same keys,
``DELETE_KEYS`` per entry with a pause between them (the foreground load keeps its share of
the disk and the loop). A full pass that finds nothing left to delete means done.

A pass reads the shard's keys a chunk at a time and asks who owns them all at once
(``owned``: one hash per key, no call per key), and reads only the rows that are not owned
(``Store.migration_view``): the pass covers the whole shard, of which a third moved, and a
scan page of decoded rows plus one ring lookup per key used to cost more than the deletes
themselves. Deletes are gathered into full entries (a third of a scan page per entry was
three times the entries, each with its own fsync), each one paced by the copy's adaptive
throttle (``throttle.py``) on top of a short fixed pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from shardkv.cluster.structured_log import log_fields
from shardkv.node.migration.throttle import LoopLagThrottle
from shardkv.node.storage.sessions import is_reserved
from shardkv.node.storage.store import Store

logger = logging.getLogger(__name__)

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
        self.throttle = LoopLagThrottle()

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
            "throttle": self.throttle.status()}

    async def _run(self) -> None:
        self.throttle.start()  # watches the loop before the first delete: its baseline
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
        finally:
            await self.throttle.stop()

    async def _one_pass(self) -> int:
        found = 0
        doomed: list[bytes] = []
        # The keys this shard does not own, selected a chunk at a time before any row is
        # read (the same live view the copy reads: a deleted key simply stops showing).
        view = await self.store.migration_view(self._doomed)
        await self.throttle.calibrate()
        now = time.time()
        async for key, _, _, _, expires_at in view.rows:
            if expires_at is not None and expires_at <= now:
                continue  # mdelete would skip it (the TTL sweeper deletes it)
            doomed.append(key)
            if len(doomed) >= DELETE_KEYS:
                found += await self._delete(doomed)
                doomed = []
        if doomed:
            found += await self._delete(doomed)
        return found

    def _doomed(self, keys: list[bytes]) -> list[bool]:
        """Keys this shard does not own. Never a reserved row: exactly-once session records
        are the node's state, not data (a scan never lists them); deleting one would let a
        retried request apply twice, and the next write would only bring it back."""
        return [not owned and not is_reserved(key)
                for key, owned in zip(keys, self.owned(keys), strict=True)]

    async def _delete(self, keys: list[bytes]) -> int:
        await self.throttle.wait()
        count, _ = await self.store.mdelete(keys)
        self.deleted += count
        await asyncio.sleep(PAUSE_S)
        return len(keys)
