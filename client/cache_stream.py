"""The read cache's invalidation stream: one watch of every shard, run by the client.

``values=False`` (only keys and versions travel) with progress marks at
``CacheConfig.progress_interval_ms``, so an idle shard still says it is caught up. Every
frame marks its shard fresh (``ReadCache.stream_delivered``); every change drops its key. The
watch resumes by itself across dropped connections and failovers without a gap
(client/key_watch.py); a new ring version (a resharding) restarts it over the new shards,
forgetting the cache, since the watch follows only the shards it started with. An error
that ends the watch (``COMPACTED`` cannot happen: it starts from now) restarts it after a
pause, with nothing served from the cache meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

from shardkv.client.key_watch import WatchEvent
from shardkv.client.read_cache import ReadCache

log = logging.getLogger("shardkv.client.cache")
RESTART_PAUSE_S = 0.5

Watch = Callable[[], AsyncGenerator[WatchEvent, None]]


async def run_invalidation(cache: ReadCache, watch: Watch, ring_version: Callable[[], int],
                           shard_name: Callable[[str], str] = str) -> None:
    """Until cancelled: follow every shard and keep ``cache`` honest. ``shard_name`` maps
    the shard an event names to the router's name for it (a client talking to one node
    directly calls its only shard ``direct``, whatever the node calls it)."""
    while True:
        cache.stream_restarted()
        started_ring = ring_version()
        events = watch()
        try:
            async for event in events:
                cache.stream_delivered(shard_name(event.shard))
                if event.key is not None and event.type != "progress":
                    cache.touch(event.key, event.version)
                if ring_version() != started_ring:
                    break  # keys moved between shards: start over on the new ring
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the watch ended: nothing is fresh until it is back
            log.debug("cache invalidation stream restarts: %s", exc)
            cache.stream_restarted()
            await asyncio.sleep(RESTART_PAUSE_S)
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()
