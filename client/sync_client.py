"""``SyncClient``: the same operations as ``Client``, blocking, safe from several threads.

It owns a private event loop in a daemon thread and an async ``Client`` living on it; each
call is submitted with ``run_coroutine_threadsafe`` and waited for. So threads share one set
of pipelined connections (many threads, one socket per node, requests interleaved) instead of
each opening its own, and the logic is the async client's, not a copy of it.

The blocking methods are ``SyncCommands`` (``client/sync_commands.py``), generated from
``Commands`` by ``scripts/gen_sync_client.py`` and checked in, so type checkers and editors see
them; a test fails when an async operation has no blocking twin with the same signature.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from shardkv.client.async_client import Client
from shardkv.client.key_watch import WatchEvent
from shardkv.client.read_cache import ReadCache
from shardkv.client.sync_commands import SyncCommands
from shardkv.client.values import KeyItem
from shardkv.cluster import event_loop
from shardkv.cluster.cluster_map import ClusterMap

T = TypeVar("T")

_STOP_TIMEOUT = 5.0


class SyncClient(SyncCommands):
    """Blocking twin of ``Client`` (same constructor arguments)."""

    def __init__(self, coordinators: list[str] | str | None = None, **options: Any) -> None:
        # uvloop where available (SHARDKV_UVLOOP=0 turns it off), as in every shardkv process.
        self._loop = event_loop.new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="shardkv-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._client = self._run(self._make(coordinators, options))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _make(coordinators: list[str] | str | None, options: dict[str, Any]) -> Client:
        client = Client(coordinators, **options)
        return await client.connect()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncClient cannot be called from its own loop (use Client)")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            self._stop_loop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the operations that are not plain coroutines -------------------------------------

    def scan(self, prefix: Any = None, **options: Any) -> Iterator[KeyItem]:
        """``Commands.scan``, as a blocking iterator (pages are fetched on the client loop)."""
        return self._blocking(self._run(_call_sync(self._client.scan, prefix, **options)))

    def watch(self, key: Any = None, **options: Any) -> Iterator[WatchEvent]:
        """``Client.watch``, as a blocking iterator (the watch runs on the client loop)."""
        return self._blocking(self._run(_call_sync(self._client.watch, key, **options)))

    def _blocking(self, iterator: AsyncGenerator[T, None]) -> Iterator[T]:
        """Drive an async generator of the client loop from this thread, closing it there."""
        try:
            while True:
                try:
                    yield self._run(_next_of(iterator))
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(iterator.aclose())

    def same_shard(self, keys: Any) -> bool:
        return self._run(_call_sync(self._client.same_shard, keys))

    @property
    def cluster_map(self) -> ClusterMap | None:
        return self._client.cluster_map

    @property
    def cache(self) -> ReadCache | None:
        """The read cache (``cache.stats()`` is safe from any thread: a snapshot)."""
        return self._client.cache

    def refresh_map(self) -> ClusterMap:
        return self._run(self._client.refresh_map())


async def _next_of(iterator: AsyncIterator[T]) -> T:
    """``anext`` as a coroutine (``run_coroutine_threadsafe`` takes only coroutines)."""
    return await anext(iterator)


async def _call_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a plain (non-async) method on the client loop, where the router lives."""
    return fn(*args, **kwargs)
