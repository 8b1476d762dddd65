"""A background task that runs only while someone is listening.

The coordinator's pollers for its event feeds (``node_stats.py``, ``liveness_events.py``)
cost the nodes or the leader a request a second; nobody should pay that for a dashboard
nobody has open. ``wake`` starts the task when it is not running; the task's loop ends by
itself when its listeners are gone, and ``close`` ends it at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class FeedPoller:
    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._make = run
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._make(), name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
