"""The node's disk endpoints: look at disk use, take a snapshot now, compact the engine.

- ``GET /v1/disk``: ``disk_report`` (use by kind, free space, retained log, newest snapshot,
  the low-disk guard, compaction), read-only like ``/metrics``;
- ``POST /admin/snapshot``: snapshot at the applied LSN now and trim the log behind it; the
  answer is the snapshot's report (LSN, bytes, seconds, segments removed);
- ``POST /admin/compact``: the SQLite engine gives its free pages back (VACUUM); the
  answer is the before/after report. INVALID_ARGUMENT on the memory engine.

The ``/admin/`` routes are authorized by the node's internal guard
(``node/membership/internal_guard.py``), as every other ``/admin/`` route: a request signed
with the cluster credential, or the operator's ``SHARDKV_ADMIN_TOKEN`` as a bearer token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from shardkv.cluster.errors import ShardKVError, Unavailable
from shardkv.cluster.http_body import error_response, respond
from shardkv.node.storage.disk_report import disk_report

if TYPE_CHECKING:
    from shardkv.node.metrics import NodeMetrics
    from shardkv.node.storage.store import Store


class DiskAdmin:
    def __init__(self, store: Callable[[], Store | None], metrics: NodeMetrics) -> None:
        self._store = store
        self._metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/disk", self._coded(self.disk)),
            web.post("/admin/snapshot", self._coded(self.snapshot)),
            web.post("/admin/compact", self._coded(self.compact)),
        ]

    def _serving(self) -> Store:
        store = self._store()
        if store is None:
            raise Unavailable("the node is not serving (starting up or shutting down)")
        return store

    async def disk(self, request: web.Request) -> web.StreamResponse:
        return respond(request, disk_report(self._serving()))

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        _meta, report = await self._serving().snapshotter.take_report("admin")
        self._metrics.maintenance.labels("snapshot").inc()
        return respond(request, report.to_dict())

    async def compact(self, request: web.Request) -> web.StreamResponse:
        report = await self._serving().snapshotter.compact()
        self._metrics.maintenance.labels("compact").inc()
        return respond(request, report.to_dict())

    @staticmethod
    def _coded(handler: Callable) -> Callable:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ShardKVError as exc:
                return error_response(request, exc)

        return wrapped
