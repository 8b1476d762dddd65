"""A scan across shards: one paged stream per shard, merged into one stream in key order.

Each shard is read page by page with its cursor (bounded memory: one page per shard), and a
heap over the heads of the pages yields the smallest key next, so the caller sees one sorted
stream as if the keyspace were not sharded. Pages of different shards are fetched
concurrently at the start; afterwards a shard is asked for its next page only when its
current one is used up.

Keys come back in the type the caller used: text (``str``) when the scan was asked with a text
prefix or range, or with none (the common case: keys written as text are read as text, and
can be handed straight back to ``get``); ``bytes`` when it was asked with bytes. A key that is
not valid UTF-8 comes as ``bytes`` even in a text scan, since no string stands for it.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncGenerator
from typing import Any, Literal

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


KeyType = Literal["text", "bytes"]


def key_type_of(*asked: object) -> KeyType:
    """``bytes`` if the caller gave any bound as bytes, else ``text``."""
    return "bytes" if any(isinstance(a, bytes | bytearray | memoryview) for a in asked) \
        else "text"


def _raw_key(item: KeyItem) -> bytes:
    """The key as the node sent it (pages hold bytes keys; the heap orders by them)."""
    return item.key if isinstance(item.key, bytes) else item.key.encode("utf-8")


def _as_caller_key(item: KeyItem, key_type: KeyType) -> KeyItem:
    if key_type == "bytes" or not isinstance(item.key, bytes):
        return item
    try:
        return KeyItem(item.key.decode("utf-8"), item.value, item.version)
    except UnicodeDecodeError:
        return item


async def merged_scan(
    executor: Executor,
    base: dict[str, Any],
    limit: int | None,
    page_size: int,
    budget: float | None,
    key_type: KeyType = "text",
) -> AsyncGenerator[KeyItem, None]:
    """Items of every shard in key order, at most ``limit`` of them, keys as ``key_type``."""
    if limit == 0:
        return
    streams = [
        shard_pages(executor, shard, base, page_size, budget)
        for shard in executor.router.shards()
    ]
    buffers: list[list[KeyItem]] = [[] for _ in streams]
    heap: list[tuple[bytes, int, int]] = []  # (raw key, stream, position in its buffer)

    async def refill(s: int) -> None:
        page = await anext(streams[s], None)
        buffers[s] = page or []
        if buffers[s]:
            heapq.heappush(heap, (_raw_key(buffers[s][0]), s, 0))

    try:
        await asyncio.gather(*(refill(s) for s in range(len(streams))))
        emitted = 0
        while heap:
            _, s, pos = heapq.heappop(heap)
            yield _as_caller_key(buffers[s][pos], key_type)
            emitted += 1
            if limit is not None and emitted >= limit:
                return
            if pos + 1 < len(buffers[s]):
                heapq.heappush(heap, (_raw_key(buffers[s][pos + 1]), s, pos + 1))
            else:
                await refill(s)
    finally:
        for stream in streams:
            await stream.aclose()
