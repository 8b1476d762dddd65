"""A scan across shards: one paged stream per shard, merged into one stream in key order.

Each shard is read page by page with its cursor (bounded memory: one page per shard), and a
heap over the heads of the pages yields the smallest key next, so the caller sees one sorted
stream as if the keyspace were not sharded. Pages of different shards are fetched
concurrently at the start; afterwards a shard is asked for its next page only when its
current one is used up.
"""



from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncGenerator
from typing import Any

from shardkv.client.executor import Executor
from shardkv.client.values import KeyItem


async def shard_pages(
    executor: Executor, shard: str, base: dict[str, Any], page_size: int, budget: float | None
) -> AsyncGenerator[list[KeyItem], None]:
    """The pages of one shard's part of the scan, following the node's cursor."""
    cursor: bytes | None = None
    while True:
        args = {**base, "limit": page_size}
        if cursor is not None:
            args["cursor"] = cursor
        body = await executor.call("scan", args, shard=shard, budget=budget)
        page = [KeyItem(bytes(k), bytes(v), int(ver)) for k, v, ver in body["items"]]
        if page:
            yield page
        cursor = body.get("cursor")
        if cursor is None:
            return


async def merged_scan(
    executor: Executor,
    base: dict[str, Any],
    limit: int | None,
    page_size: int,
    budget: float | None,
) -> AsyncGenerator[KeyItem, None]:
    """Items of every shard in key order, at most ``limit`` of them."""
    if limit == 0:
        return
    streams = [
        shard_pages(executor, shard, base, page_size, budget)
        for shard in executor.router.shards()
    ]
    buffers: list[list[KeyItem]] = [[] for _ in streams]
    heap: list[tuple[bytes, int, int]] = []  # (key, stream, position in its buffer)

    async def refill(s: int) -> None:
        page = await anext(streams[s], None)
        buffers[s] = page or []
        if buffers[s]:
            heapq.heappush(heap, (buffers[s][0].key, s, 0))

    try:
        await asyncio.gather(*(refill(s) for s in range(len(streams))))
        emitted = 0
        while heap:
            _, s, pos = heapq.heappop(heap)
            yield buffers[s][pos]
            emitted += 1
            if limit is not None and emitted >= limit:
                return
            if pos + 1 < len(buffers[s]):
                heapq.heappush(heap, (buffers[s][pos + 1].key, s, pos + 1))
            else:
                await refill(s)
    finally:
        for stream in streams:
            await stream.aclose()
