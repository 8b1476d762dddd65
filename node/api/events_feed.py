"""``GET /v1/events`` on a node: storage and replication events at the interval the
subscriber chooses, as JSON text frames (docs/events.md).

Every ``interval_ms`` the feed samples the store's and the replication layer's counters and
sends what changed since the previous sample: a ``storage.sample`` (LSNs, pending writes,
WAL size, fsyncs in the interval with their mean latency and group size), discrete events
derived from the counters (``storage.snapshot_taken``, ``storage.segments_changed``,
``role.changed``) and a ``replication.sample`` (role, epoch, commit LSN, each replica's lag).
Sampling is cheap (counters already kept for /metrics), so a feed costs a few hundred bytes a
second; the query is checked before the WebSocket opens (``INVALID_ARGUMENT`` with HTTP 400),
and at most ``MAX_FEEDS`` feeds are open per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from shardkv.cluster.errors import InvalidArgument, ShardKVError, Unavailable
from shardkv.cluster.wire import to_json
from shardkv.node.storage.store import Store
from shardkv.node.storage.store_model import StoreStats

CATEGORIES = ("storage", "replication")
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 60_000
DEFAULT_INTERVAL_MS = 1_000
MAX_FEEDS = 64

StatusSource = Callable[[], dict[str, Any] | None]


def parse_query(query: Any) -> tuple[float, tuple[str, ...]]:
    """``interval_ms`` and ``categories`` (comma-separated), or INVALID_ARGUMENT."""
    raw = query.get("interval_ms", str(DEFAULT_INTERVAL_MS))
    try:
        interval_ms = int(raw)
    except ValueError:
        raise InvalidArgument(f"interval_ms must be an integer, got {raw!r}") from None
    if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
        raise InvalidArgument(f"interval_ms must be from {MIN_INTERVAL_MS} to "
                              f"{MAX_INTERVAL_MS}, got {interval_ms}")
    asked = [c for c in query.get("categories", ",".join(CATEGORIES)).split(",") if c]
    unknown = sorted(set(asked) - set(CATEGORIES))
    if unknown or not asked:
        raise InvalidArgument(f"unknown event categories {unknown}; known: "
                              f"{', '.join(CATEGORIES)}")
    return interval_ms / 1000, tuple(dict.fromkeys(asked))


def storage_events(node: str | None, before: StoreStats | None, now: StoreStats,
                   seconds: float) -> list[dict[str, Any]]:
    """The storage events between two samples (``before`` None: the first sample)."""
    wal = now.wal
    syncs = wal.syncs - (before.wal.syncs if before else 0)
    sync_s = wal.sync_seconds_total - (before.wal.sync_seconds_total if before else 0.0)
    appended = wal.appended_entries - (before.wal.appended_entries if before else 0)
    events: list[dict[str, Any]] = [{
        "type": "storage.sample", "node": node, "interval_s": round(seconds, 3),
        "last_lsn": now.last_lsn, "applied_lsn": now.applied_lsn,
        "pending_writes": now.pending_writes, "keys": now.keys,
        "wal": {"segments": wal.segments, "bytes": wal.bytes, "entries": appended,
                "fsyncs": syncs,
                "fsync_ms_mean": round(sync_s / syncs * 1000, 3) if syncs else None,
                "group_size_mean": round(appended / syncs, 2) if syncs else None,
                "group_size_last": wal.last_group_size},
        "snapshot": {"lsn": now.snapshot_lsn, "age_s": None if now.snapshot_age_s is None
                     else round(now.snapshot_age_s, 1)},
    }]
    if before is not None and now.snapshots_taken > before.snapshots_taken:
        events.append({"type": "storage.snapshot_taken", "node": node,
                       "lsn": now.snapshot_lsn,
                       "count": now.snapshots_taken - before.snapshots_taken})
    if before is not None and now.wal.segments != before.wal.segments:
        events.append({"type": "storage.segments_changed", "node": node,
                       "segments": now.wal.segments, "before": before.wal.segments})
    return events


def replication_events(node: str | None, before: dict[str, Any] | None,
                       now: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "replication.sample", **now, "node": node}]
    if before is not None and (before.get("role"), before.get("epoch")) != (
            now.get("role"), now.get("epoch")):
        events.append({"type": "role.changed", "node": node,
                       "role": now.get("role"), "epoch": now.get("epoch"),
                       "before": {"role": before.get("role"), "epoch": before.get("epoch")}})
    return events


class EventsFeed:
    """The ``/v1/events`` handler; ``store`` and ``replication`` are read at each sample."""

    def __init__(self, store: Callable[[], Store | None], replication: StatusSource,
                 node_id: str | None) -> None:
        self._store = store
        self._replication = replication
        self._node = node_id
        self.open_feeds = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            interval, categories = parse_query(request.query)
            if self.open_feeds >= MAX_FEEDS:
                raise Unavailable(f"this node serves {MAX_FEEDS} event feeds already")
        except ShardKVError as exc:
            return web.json_response(exc.to_dict(), status=exc.http_status)
        ws = web.WebSocketResponse(heartbeat=30.0, compress=False)
        await ws.prepare(request)
        self.open_feeds += 1
        reader = asyncio.create_task(_drain(ws))
        try:
            await self._send_samples(ws, interval, categories, reader)
        except (ConnectionError, RuntimeError, TimeoutError):
            pass  # the subscriber went away
        finally:
            self.open_feeds -= 1
            reader.cancel()
            if not ws.closed:
                await ws.close()
        return ws

    async def _send_samples(self, ws: web.WebSocketResponse, interval: float,
                            categories: tuple[str, ...], reader: asyncio.Task[None]) -> None:
        stats_before: StoreStats | None = None
        status_before: dict[str, Any] | None = None
        sampled_at = time.monotonic()
        while not reader.done():
            events: list[dict[str, Any]] = []
            now = time.monotonic()
            store = self._store()
            if "storage" in categories and store is not None:
                stats = store.stats()
                events += storage_events(self._node, stats_before, stats, now - sampled_at)
                stats_before = stats
            status = self._replication()
            if "replication" in categories and status is not None:
                events += replication_events(self._node, status_before, status)
                status_before = status
            sampled_at = now
            for event in events:
                await asyncio.wait_for(ws.send_str(to_json(event).decode()), 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), interval)


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) until the subscriber closes."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass
