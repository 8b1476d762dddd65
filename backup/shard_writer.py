"""Restored rows to their owners: each key placed by the target's ring, each shard's batch
posted to its primary's ``POST /admin/backup/import`` (``node/backup/importer.py``).

This is the client's routing done once per key, with the expiry kept as an absolute time;
the node still checks that it owns every key. On ``NOT_PRIMARY``, ``STALE_MAP`` or another
retryable answer (a failover, a node restarting) the map is read again and the batch routed
again, a few times with backoff, before the restore gives up (and empties the target).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp
from shardkv.backup.cluster_access import admin_headers, fetch_map
from shardkv.backup.repository.errors import BackupError
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.ring import shard_for_key

IMPORT_PATH = "/admin/backup/import"
MAX_BATCH_BYTES = 8 << 20
ATTEMPTS = 8
BACKOFF_S = 0.2
RETRYABLE = {"NOT_PRIMARY", "STALE_MAP", "UNAVAILABLE", "TIMEOUT", "OUTCOME_UNKNOWN",
             "STALE_EPOCH"}

Record = list[Any]  # [kind, key, value, expires_at]


class ShardWriter:
    def __init__(self, coordinators: list[str], session: aiohttp.ClientSession) -> None:
        self.coordinators = coordinators
        self.session = session
        self.cluster_map: ClusterMap | None = None
        self.writes = 0

    async def refresh(self) -> ClusterMap:
        raw = await asyncio.to_thread(fetch_map, self.coordinators)
        self.cluster_map = ClusterMap.from_dict(raw)
        return self.cluster_map

    def _route(self, records: list[Record]) -> dict[str, list[Record]]:
        assert self.cluster_map is not None
        groups: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            groups[shard_for_key(self.cluster_map, record[1])].append(record)
        return groups

    async def write(self, records: list[Record]) -> None:
        """Write ``records`` (distinct keys: their order does not matter)."""
        if self.cluster_map is None:
            await self.refresh()
        pending = records
        for attempt in range(ATTEMPTS):
            groups = self._route(pending)
            results = await asyncio.gather(*(self._post_shard(shard, group)
                                             for shard, group in groups.items()))
            pending = [record for failed in results for record in failed]
            if not pending:
                return
            await asyncio.sleep(BACKOFF_S * (2 ** attempt))
            await self.refresh()
        raise BackupError(f"{len(pending)} rows could not be written after {ATTEMPTS} "
                          f"attempts (the target's shards keep refusing them)")

    async def _post_shard(self, shard: str, records: list[Record]) -> list[Record]:
        """Post in pieces under MAX_BATCH_BYTES; returns the records to retry."""
        retry: list[Record] = []
        for piece in _pieces(records, lambda r: len(r[1]) + len(r[2]) + 16):
            if not await self._post(shard, piece):
                retry.extend(piece)
        return retry

    async def _post(self, shard: str, records: list[Record]) -> bool:
        assert self.cluster_map is not None
        info = self.cluster_map.shards.get(shard)
        node = self.cluster_map.nodes.get(info.primary or "") if info is not None else None
        if node is None or not node.url:
            return False  # no primary right now: retry after a map refresh
        body = wire.pack({"records": records})
        headers = {"Content-Type": wire.MSGPACK, "Accept": wire.MSGPACK,
                   **admin_headers("POST", IMPORT_PATH, body)}
        try:
            async with self.session.post(f"{node.url.rstrip('/')}{IMPORT_PATH}", data=body,
                                         headers=headers) as resp:
                raw = await resp.read()
                answer = wire.unpack(raw) if raw else None
        except (aiohttp.ClientError, TimeoutError):
            return False
        if resp.status == 200:
            self.writes += 1
            return True
        code = answer.get("error") if isinstance(answer, dict) else None
        if code in RETRYABLE:
            return False
        message = answer.get("message") if isinstance(answer, dict) else resp.status
        raise BackupError(f"shard {shard} ({node.url}) refused restored rows: {code}: {message}")


def _pieces(records: list[Record], size: Callable[[Record], int]) -> list[list[Record]]:
    pieces: list[list[Record]] = [[]]
    used = 0
    for record in records:
        cost = size(record)
        if pieces[-1] and used + cost > MAX_BATCH_BYTES:
            pieces.append([])
            used = 0
        pieces[-1].append(record)
        used += cost
    return [p for p in pieces if p]
