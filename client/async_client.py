"""``Client``: the asyncio client.

Built from coordinator URLs, or without any: then from ``SHARDKV_COORDINATORS``
(comma-separated), then from the ``cluster.json`` of a local cluster (``$SHARDKV_DIR``, default
``./.shardkv``, what ``shardkv up`` writes), the order the CLI uses. Or in direct mode from one
standalone node URL. ``async with Client(...) as kv`` fetches the map, starts the map
watch, and closes every connection on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from shardkv.client.cache_stream import run_invalidation
from shardkv.client.commands import Commands
from shardkv.client.eventual_watch import EventualWatch
from shardkv.client.executor import DEFAULT_MAX_HOPS, DEFAULT_TIMEOUT, Executor
from shardkv.client.key_watch import (
    WatchEvent,
    merged_watch,
    start_versions,
    watch_request,
    watched_shards,
)
from shardkv.client.read_cache import CacheConfig, ReadCache
from shardkv.client.retry import Retry
from shardkv.client.routing import DIRECT_SHARD, Router
from shardkv.client.write_sessions import WriteSessions
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.limits import Limits

COORDINATORS_ENV = "SHARDKV_COORDINATORS"
DIR_ENV = "SHARDKV_DIR"
DEFAULT_DIR = ".shardkv"


def coordinators_from_env() -> list[str]:
    """``$SHARDKV_COORDINATORS``, else the coordinators in ``$SHARDKV_DIR/cluster.json``."""
    raw = os.environ.get(COORDINATORS_ENV, "")
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    return urls or coordinators_in(Path(os.environ.get(DIR_ENV) or DEFAULT_DIR))


def coordinators_in(directory: Path) -> list[str]:
    """The coordinator URLs a local cluster's ``cluster.json`` lists ([] if there is none).
    Raises ValueError for a file that is there but not a cluster file."""
    cluster_file = directory / "cluster.json"
    if not cluster_file.is_file():
        return []
    try:
        described = json.loads(cluster_file.read_text())
        return [str(c["url"]) for c in described.get("coordinators", [])]
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ValueError(f"{cluster_file} is not a valid cluster file: {exc}") from None


class Client(Commands):
    """The asyncio client. Every operation is a coroutine (see ``Commands``)."""

    def __init__(
        self,
        coordinators: list[str] | str | None = None,
        *,
        nodes: list[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        max_hops: int = DEFAULT_MAX_HOPS,
        pool_size: int = 1,
        consistency: str = "strong",
        limits: Limits | None = None,
        watch_map: bool = True,
        connect_timeout: float = 2.0,
        exactly_once: bool = True,
        cache: CacheConfig | None = None,
    ) -> None:
        if isinstance(coordinators, str):
            coordinators = [u.strip() for u in coordinators.split(",") if u.strip()]
        if not coordinators and not nodes:
            coordinators = coordinators_from_env()
        if not coordinators and not nodes:
            raise ValueError(
                f"no coordinator URLs: pass them, set {COORDINATORS_ENV}, start a local "
                f"cluster with `shardkv up` (read from ./{DEFAULT_DIR}/cluster.json or "
                f"${DIR_ENV}), or use nodes=[url] for a standalone node"
            )
        self._coordinators = list(coordinators or [])
        self._nodes = list(nodes) if nodes else None
        self._timeout = timeout
        self._retry = retry
        self._max_hops = max_hops
        self._pool_size = pool_size
        self._consistency = consistency
        self._limits = limits or Limits()
        self._watch_map = watch_map
        self._connect_timeout = connect_timeout
        # Stamp every write with a session the shard deduplicates (docs/exactly-once.md).
        # False only for comparisons (bench/dedup_bench.py): writes are then not retried
        # once they may have been sent.
        self._exactly_once = exactly_once
        # The read-through cache and the watch that keeps it fresh (client/read_cache.py).
        self._read_cache = ReadCache(cache) if cache is not None else None
        self._cache_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._router: Router | None = None
        self._executor_instance: Executor | None = None
        self._started = False

    async def connect(self) -> Client:
        """Fetch the map and start watching it (``async with`` does this for you)."""
        if self._started:
            return self
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
        )
        self._router = Router(
            self._session,
            self._coordinators or None,
            nodes=self._nodes,
            fetch_timeout=self._connect_timeout,
        )
        self._executor_instance = Executor(
            self._router,
            self._session,
            retry=self._retry,
            timeout=self._timeout,
            max_hops=self._max_hops,
            pool_size=self._pool_size,
            connect_timeout=self._connect_timeout,
            sessions=WriteSessions() if self._exactly_once else None,
        )
        self._started = True
        try:
            await self._router.start(watch=self._watch_map)
        except BaseException:
            await self.close()
            raise
        if self._read_cache is not None:
            self._start_cache(self._read_cache)
        return self

    def _start_cache(self, cache: ReadCache) -> None:
        self._executor.write_listener = cache.own_write
        router = self.router
        interval = cache.config.progress_interval_ms
        self._cache_task = asyncio.create_task(run_invalidation(
            cache,
            lambda: self.watch(prefix=b"", values=False, progress=True,
                               progress_interval_ms=interval),
            lambda: router.map.ring.version if router.map is not None else 0,
            (lambda _shard: DIRECT_SHARD) if router.direct else str,
        ), name="shardkv-cache-invalidation")

    @property
    def cache(self) -> ReadCache | None:
        """The read cache (``cache.stats()``), or None without ``cache=CacheConfig(...)``."""
        return self._read_cache

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._cache_task is not None:
            self._cache_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._cache_task
            self._cache_task = None
        if self._router is not None:
            await self._router.close()
        if self._executor_instance is not None:
            await self._executor_instance.close()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- introspection -----------------------------------------------------------------------

    @property
    def _executor(self) -> Executor:  # type: ignore[override]
        if self._executor_instance is None or not self._started:
            raise RuntimeError(
                "the client is not connected: use `async with Client(...)` or "
                "`await client.connect()`"
            )
        return self._executor_instance

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("the client is not connected (use `async with Client(...)`)")
        return self._router

    @property
    def cluster_map(self) -> ClusterMap | None:
        """The cached map (None in direct mode)."""
        return self.router.map

    @property
    def coordinator_urls(self) -> list[str]:
        """The coordinators this client was given (empty in direct mode)."""
        return list(self._coordinators)

    async def refresh_map(self) -> ClusterMap:
        return await self.router.refresh()

    # -- following changes -------------------------------------------------------------------

    def watch(
        self,
        key: Any = None,
        *,
        prefix: Any = None,
        start: Any = None,
        end: Any = None,
        start_version: int | Mapping[str, int] | None = None,
        values: bool = True,
        progress: bool = False,
        progress_interval_ms: int | None = None,
        consistency: str = "strong",
        max_staleness_ms: float | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes to ``key``, to keys with ``prefix``, or to keys in ``[start, end)``, as
        they commit: ``async for event in kv.watch(prefix="user:")``.

        Each event is a :class:`WatchEvent` (``put``, ``delete``, ``expire``) whose
        ``version`` is its shard's LSN; per key they come in write order. ``start_version``
        (one number for every shard, or a map shard -> version) replays every write after
        it first; a shard that no longer holds that history raises ``Compacted``
        (``details["compact_version"]``). The watch resumes by itself across dropped
        connections and failovers from the last version it delivered per shard. With
        ``progress=True`` it also yields ``progress`` marks (caught up to ``version`` of
        ``shard``). A prefix or range watch follows every shard of the ring, and follows
        resharding: shards that join or leave, keys that move (docs/watch.md).
        ``consistency="eventual"`` (with ``max_staleness_ms``) lets a replica within the
        bound serve it, chosen as for an eventual read; the watch moves to another member
        when its member falls behind, pauses or is cut off, with no gap or duplicate."""
        eventual = EventualWatch.of(consistency, max_staleness_ms, progress_interval_ms)
        if eventual is not None:
            progress_interval_ms = eventual.progress_interval_ms
        request = watch_request(key, prefix, start, end, values, progress_interval_ms)
        router = self.router
        if router.direct or router.map is None:
            shards = router.shards()
        else:
            shards = sorted(watched_shards(router.map, request))
        starts = start_versions(shards, start_version)
        assert self._session is not None
        return merged_watch(router, self._session, request, starts, progress=progress,
                            eventual=eventual)
