"""``GET /admin/backup/export``: this node's rows at one LSN, streamed, for a backup.

The answer is a stream of msgpack objects: a header ``{"lsn", "epoch", "shard", "node",
"role", "taken_at", "ring_version"}``, then one ``[key, value, expires_at, version]`` per
live key (values as the client wrote them, not as stored; expired keys and the reserved
session rows left out), then a trailer ``{"end": true, "count": N}``. A reader that does
not get the trailer knows the stream was cut. The rows come from the engine's consistent
view (what a snapshot reads), so writes go on meanwhile, and on a replica the primary is not
touched at all.

Bounded: one export at a time per node (a second gets ``UNAVAILABLE``, retryable), rows
leave in 256 KiB writes that wait for the socket (memory stays flat whatever the shard's
size), and a client that stops reading for ``SEND_TIMEOUT_S`` is cut off. It is an
``/admin/`` route, so the internal guard authorizes it: a request signed with the cluster
credential, or the operator's admin token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack
from aiohttp import web
from shardkv.cluster.errors import ShardKVError, Unavailable
from shardkv.cluster.http_body import error_response
from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.compression import decode_value
from shardkv.node.storage.sessions import is_reserved
from shardkv.node.storage.store import Store

logger = logging.getLogger(__name__)

EXPORT_PATH = "/admin/backup/export"
CONTENT_TYPE = "application/x-shardkv-rows"
WRITE_BYTES = 256 << 10
SEND_TIMEOUT_S = 30.0


class BackupExport:
    def __init__(self, store: Callable[[], Store | None], describe: Callable[[], dict[str, Any]]
                 ) -> None:
        """``describe`` gives this node's ``shard``, ``node``, ``role``, ``ring_version``."""
        self._store = store
        self._describe = describe
        self._busy = asyncio.Lock()
        self.exports = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.get(EXPORT_PATH, self.export)]

    async def export(self, request: web.Request) -> web.StreamResponse:
        try:
            store = self._store()
            if store is None:
                raise Unavailable("the node is not serving (starting up or shutting down)")
            if self._busy.locked():
                raise Unavailable("an export is already running on this node; retry later")
        except ShardKVError as exc:
            return error_response(request, exc)
        async with self._busy:
            return await self._stream(request, store)

    async def _stream(self, request: web.Request, store: Store) -> web.StreamResponse:
        view = await store.consistent_view()
        header = {"lsn": view.lsn, "epoch": store.epoch, "taken_at": time.time(),
                  **self._describe()}
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        await response.prepare(request)
        started = time.monotonic()
        rows = view.rows
        try:
            count = await self._send_rows(response, rows, header)
        except (ConnectionError, TimeoutError) as exc:
            # The reader went away or stopped reading: it sees a stream without its trailer.
            logger.warning("backup export cut off", extra=log_fields(lsn=view.lsn,
                                                                     error=repr(exc)))
            return response
        finally:
            aclose = getattr(rows, "aclose", None)
            if aclose is not None:
                await aclose()
        self.exports += 1
        logger.info("backup export sent", extra=log_fields(
            lsn=view.lsn, keys=count, seconds=round(time.monotonic() - started, 3)))
        return response

    async def _send_rows(self, response: web.StreamResponse, rows: Any,
                         header: dict[str, Any]) -> int:
        """Header, live rows, trailer; returns how many rows were sent."""
        packer = msgpack.Packer(use_bin_type=True)
        buffer = [packer.pack(header)]
        buffered, count = 0, 0
        now = time.time()
        async for key, value, compressed, version, expires_at in rows:
            if is_reserved(key) or (expires_at is not None and expires_at <= now):
                continue
            record = packer.pack((key, decode_value(value, compressed), expires_at, version))
            buffer.append(record)
            buffered += len(record)
            count += 1
            if buffered >= WRITE_BYTES:
                await self._send(response, buffer)
                buffer, buffered = [], 0
        buffer.append(packer.pack({"end": True, "count": count}))
        await self._send(response, buffer)
        await response.write_eof()
        return count

    @staticmethod
    async def _send(response: web.StreamResponse, buffer: list[bytes]) -> None:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await response.write(b"".join(buffer))
