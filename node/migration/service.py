"""A node's part in online migrations: routes, and the state that follows the map.

Routes (cluster credential; msgpack or JSON bodies; only a primary acts):

- ``POST /internal/migration/floor`` ``{lsn}``: raise this target shard's LSN floor (an
  empty shard restarts its log; one holding keys jumps, see floor.py); answers
  ``{lsn, jumped_from, epoch}`` (``jumped_from``: the log's end before, if this call jumped).
- ``POST /internal/migration/import/begin`` and ``POST /internal/migration/import``: the
  target side of a source's stream (see importer.py); ``GET /internal/migration/import``.
- ``POST /internal/migration/export`` ``{id, attempt, targets: {shard: primary url}}``
  (or ``target_url`` for the one target of an add): start (or keep) the export of this
  source shard's moving arcs; ``GET /internal/migration/export``: progress, and the fence
  (``fenced``, ``draining``, ``writes_in_flight``: what the final catch-up waits for).
- ``POST /internal/migration/fence`` ``{id, map_version}``: once this node's map shows the
  fence, wait for the writes in flight, drain the pipeline, ship the log up to its applied
  end ``F`` and answer ``{fenced_lsn: F, epoch}``.
- ``POST /internal/migration/clean`` ``{id}``: start deleting moved keys (after the flip);
  ``GET /internal/migration/clean``: progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ClusterMap, RingSpec
from shardkv.cluster.cluster_token import check_auth
from shardkv.cluster.errors import (
    InvalidArgument,
    NotFound,
    NotPrimary,
    ShardKVError,
    StaleEpoch,
    Timeout,
    Unavailable,
)
from shardkv.cluster.limits import MAX_FRAME_BYTES
from shardkv.cluster.migration_record import BEFORE_FLIP
from shardkv.node.membership.coordinator_link import Placement
from shardkv.node.migration.arcs import MovingArcs, owned_by, target_spec
from shardkv.node.migration.cleaner import MovedKeyCleaner
from shardkv.node.migration.exporter import ArcExport
from shardkv.node.migration.fence import ArcFence
from shardkv.node.migration.floor import raise_lsn_floor
from shardkv.node.migration.heap_freeze import HeapFreeze
from shardkv.node.migration.importer import ArcImporter
from shardkv.node.migration.throttle import LoopLagThrottle
from shardkv.node.storage.store import Store

if TYPE_CHECKING:
    from shardkv.node.server import NodeServer

FENCE_WAIT_S = 10.0
MAP_LAG_S = 3.0
SHIP_WAIT_S = 20.0
# Test and drill knob: hold the fence this long before the final catch-up, so a fault can be
# landed while a migration is ``flipping`` (tests/integration/test_resharding_remove_faults.py).
FENCE_HOLD_S = float(os.environ.get("SHARDKV_MIGRATION_FENCE_HOLD_S") or 0.0)


class MigrationService:
    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.fence = ArcFence()
        self.importer = ArcImporter()
        self.export: ArcExport | None = None
        self.cleaner: MovedKeyCleaner | None = None
        self.cluster_map: ClusterMap | None = None
        self.shard: str | None = None
        self._map_changed = asyncio.Event()
        self.heap = HeapFreeze()
        # (migration id, its copy throttle), watching the loop from the moment this source
        # primary's map shows the migration (see ``_watch_before_copy``).
        self._throttle: tuple[str, LoopLagThrottle] | None = None
        # (migration id, the copy throttle's baseline lateness): the clean-up starts from it
        # instead of watching the loop for another CALIBRATE_S after the flip.
        self._baseline: tuple[str, float] | None = None

    def install(self) -> None:
        assert self.server.membership is not None
        self.server.membership.listeners.append(self._on_map)
        self.server.ctx.write_fence = self.fence
        self.server.on_stop.append(self._stop)
        self.server.app.add_routes([
            web.post("/internal/migration/floor", self._coded(self.floor)),
            web.post("/internal/migration/import/begin", self._coded(self.import_begin)),
            web.post("/internal/migration/import", self._coded(
                self.import_batch, timed="decode", use_list=False)),
            web.get("/internal/migration/import", self._coded(self.import_status)),
            web.post("/internal/migration/export", self._coded(self.export_start)),
            web.get("/internal/migration/export", self._coded(self.export_status)),
            web.post("/internal/migration/fence", self._coded(self.fence_and_ship)),
            web.post("/internal/migration/clean", self._coded(self.clean_start)),
            web.get("/internal/migration/clean", self._coded(self.clean_status)),
        ])

    async def _on_map(self, placement: Placement, cluster_map: ClusterMap) -> None:
        self.cluster_map, self.shard = cluster_map, placement.shard
        self.fence.follow(cluster_map, placement.shard)
        record = cluster_map.migration
        if self.export is not None and (
                placement.role != "primary" or record is None
                or record.id != self.export.migration_id or record.state == "cleaning"):
            export, self.export = self.export, None
            await export.stop()
        await self._watch_before_copy(placement, record)
        self.heap.follow(record.id if record is not None and record.running and (
            placement.shard in record.sources or placement.shard in record.targets) else None)
        self._map_changed.set()
        self._map_changed = asyncio.Event()

    async def _stop(self, server: NodeServer) -> None:
        for task in (self.export, self.cleaner):
            if task is not None:
                await task.stop()
        if self._throttle is not None:
            await self._throttle[1].stop()

    async def _watch_before_copy(self, placement: Placement, record: Any) -> None:
        """Start the copy throttle's ticker as soon as the map shows a migration this
        source primary will export: its baseline (the loop under the foreground load alone,
        ``CALIBRATE_S``) is measured while the targets' floors are raised and, for an add,
        the new members start, instead of holding up the copy for it."""
        wanted = (placement.role == "primary" and record is not None and record.running
                  and record.state in BEFORE_FLIP and placement.shard in record.sources)
        current = self._throttle
        if current is not None and (not wanted or current[0] != record.id):
            self._throttle = None
            await current[1].stop()
            if current[1].baseline_lag_s is not None:
                self._baseline = (current[0], current[1].baseline_lag_s)
        if wanted and self._throttle is None:
            throttle = LoopLagThrottle(activity=self._foreground)
            throttle.start()
            self._throttle = (record.id, throttle)

    # -- plumbing ------------------------------------------------------------------------

    def _coded(self, handler: Any, *, timed: str | None = None, use_list: bool = True) -> Any:
        """``handler`` behind the cluster credential, its body decoded, its errors coded;
        ``timed``: the importer's stage that reading and decoding the body count for;
        ``use_list=False``: msgpack arrays arrive as tuples (``wire.unpack``)."""
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                check_auth(request.headers.get("Authorization"))
                began = time.perf_counter()
                body = await _read_body(request, use_list)
                if timed is not None:
                    self.importer.clock.add(timed, time.perf_counter() - began)
                answer = await handler(body)
            except ShardKVError as exc:
                return _respond(request, exc.to_dict(), exc.http_status)
            return _respond(request, answer, 200)
        return wrapped

    def _primary_store(self) -> Store:
        ctx = self.server.ctx
        if ctx.role != "primary":
            raise NotPrimary(f"this node is a {ctx.role}; migration work goes to the primary",
                             primary=ctx.primary)
        return ctx.serving_store()

    # -- target side ---------------------------------------------------------------------

    async def floor(self, body: dict[str, Any]) -> dict[str, Any]:
        lsn = body.get("lsn")
        if isinstance(lsn, bool) or not isinstance(lsn, int) or lsn < 1:
            raise InvalidArgument("lsn must be a positive integer")
        store = self._primary_store()
        now, jumped_from = await raise_lsn_floor(store, lsn)
        return {"lsn": now, "jumped_from": jumped_from, "epoch": store.epoch}

    async def _importing(self, migration_id: str) -> None:
        """Imports only while this node's map shows the migration before its flip: a batch
        that arrives after an abort (the target is cleaning what it received) or after the
        flip is refused, never written. A map a little behind the source's gets a moment."""
        deadline = time.monotonic() + MAP_LAG_S
        while True:
            m = self.cluster_map
            record = m.migration if m is not None else None
            if record is not None and record.id == migration_id and record.running:
                if record.state not in BEFORE_FLIP:
                    break
                return
            if m is not None and m.find_migration(migration_id) is not None:
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"this node's map has no migration {migration_id} yet")
            changed = self._map_changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await changed.wait()
        raise StaleEpoch(f"migration {migration_id} takes no more imports here (its map "
                         f"record says it is over or flipped)")

    async def import_begin(self, body: dict[str, Any]) -> dict[str, Any]:
        store = self._primary_store()
        await self._importing(_text(body, "id"))
        wiped = await self.importer.begin(store, _text(body, "id"), _text(body, "attempt"),
                                          _arcs(body))
        return {"wiped": wiped, "lsn": store.last_lsn}

    async def import_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        store = self._primary_store()
        records = body.get("records")
        if not isinstance(records, list | tuple):
            raise InvalidArgument("records must be a list")
        await self._importing(_text(body, "id"))
        answer = await self.importer.apply(store, _text(body, "id"), _text(body, "source"),
                                           _text(body, "attempt"), records)
        self.heap.refreeze()
        return answer

    async def import_status(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**self.importer.status(), "gc": self.heap.status()}

    # -- source side ---------------------------------------------------------------------

    def _record(self, migration_id: str) -> Any:
        record = self.cluster_map.migration if self.cluster_map else None
        if record is None or record.id != migration_id:
            raise NotFound(f"this node's map has no running migration {migration_id!r} "
                           f"(map version {self.fence.map_version})")
        return record

    async def export_start(self, body: dict[str, Any]) -> dict[str, Any]:
        store = self._primary_store()
        migration_id, attempt = _text(body, "id"), _text(body, "attempt")
        record = self._record(migration_id)
        routes = _routes(body, record.targets)
        if self.shard not in record.sources:
            raise InvalidArgument(f"shard {self.shard} is not a source of {migration_id}")
        current = self.export
        if current is not None and current.attempt == attempt and current.running:
            return current.status()
        if current is not None:
            await current.stop()
        assert self.cluster_map is not None and self.shard is not None
        arcs = MovingArcs.of(self.cluster_map.ring,
                             target_spec(self.cluster_map.ring, record.target_ring),
                             self.shard, record.targets)
        throttle = self._throttle[1] if self._throttle and (
            self._throttle[0] == migration_id) else LoopLagThrottle(activity=self._foreground)
        self.export = ArcExport(store, migration_id, attempt, arcs, routes, throttle)
        self.export.start()
        return self.export.status()

    async def export_status(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.export is None:
            return {}
        return {**self.export.status(), "fence": self.fence.status(), "gc": self.heap.status()}

    async def fence_and_ship(self, body: dict[str, Any]) -> dict[str, Any]:
        migration_id = _text(body, "id")
        wanted = body.get("map_version", 0)
        deadline = time.monotonic() + FENCE_WAIT_S
        while not (self.fence.fenced and self.fence.map_version >= wanted):
            if time.monotonic() > deadline:
                raise Timeout("this node has not seen the fence in its map yet")
            changed = self._map_changed
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await changed.wait()
            except TimeoutError:
                continue
        store = self._primary_store()
        export = self.export
        if export is None or export.migration_id != migration_id or not export.running:
            raise Unavailable("no export of this migration runs here; start it again")
        if FENCE_HOLD_S:
            await asyncio.sleep(FENCE_HOLD_S)
        try:
            # Bounded: the moving keys are unwritable meanwhile; a shard that cannot commit
            # (no majority) fails the fence, and the coordinator lifts it.
            async with asyncio.timeout(SHIP_WAIT_S):
                await self.fence.drained(FENCE_WAIT_S)
                await store.barrier()
                fenced_lsn = store.applied_lsn
                await export.ship_until(fenced_lsn, SHIP_WAIT_S)
        except TimeoutError:
            raise Timeout("the fence could not drain and ship in time") from None
        return {"fenced_lsn": fenced_lsn, "epoch": store.epoch, **export.status()}

    async def clean_start(self, body: dict[str, Any]) -> dict[str, Any]:
        migration_id = _text(body, "id")
        store = self._primary_store()
        ring_version = body.get("ring_version", 0)
        known = self.cluster_map.ring.version if self.cluster_map else 0
        if not isinstance(ring_version, int) or known < ring_version:
            raise Unavailable(f"this node knows ring version {known}, not {ring_version} yet")
        map_version = body.get("map_version", 0)
        if not isinstance(map_version, int) or self.fence.map_version < map_version:
            # (After an abort: the map that stops the imports must be here first.)
            raise Unavailable(f"this node knows map version {self.fence.map_version}, not "
                              f"{map_version} yet")
        cleaner = self.cleaner
        if cleaner is not None and cleaner.migration_id == migration_id and (
                cleaner.running or cleaner.done):
            return cleaner.status()
        if cleaner is not None:
            await cleaner.stop()
        self.cleaner = MovedKeyCleaner(store, migration_id, self._owned,
                                       after_entry=self.heap.refreeze,
                                       activity=self._foreground)
        if self._baseline is not None and self._baseline[0] == migration_id:
            self.cleaner.throttle.adopt(self._baseline[1])
        self.cleaner.start()
        return self.cleaner.status()

    async def clean_status(self, body: dict[str, Any]) -> dict[str, Any]:
        return {} if self.cleaner is None else {**self.cleaner.status(),
                                                 "gc": self.heap.status()}

    def _foreground(self) -> int:
        """Keyed requests this node has seen (the throttles pace only while it moves)."""
        return self.fence.requests

    def _owned(self, keys: list[bytes]) -> list[bool]:
        cluster_map, shard = self.cluster_map, self.shard
        if cluster_map is None or shard is None or not cluster_map.ring.shards:
            return [True] * len(keys)
        return owned_by(cluster_map.ring, shard, keys)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= 512:
        raise InvalidArgument(f"{name} must be a non-empty string")
    return value


def _arcs(body: dict[str, Any]) -> MovingArcs:
    """The arcs a source's stream moves here (``target`` is this shard)."""
    ring, target_ring = body.get("ring"), body.get("target_ring")
    if not isinstance(ring, dict) or not isinstance(target_ring, dict):
        raise InvalidArgument("ring and target_ring must be ring objects")
    return MovingArcs.of(RingSpec.from_dict(ring), RingSpec.from_dict(target_ring),
                         _text(body, "source"), [_text(body, "target")])


def _routes(body: dict[str, Any], targets: list[str]) -> dict[str, str]:
    """Target shard -> its primary's URL, for every target of the migration."""
    routes = body.get("targets")
    if routes is None and len(targets) == 1:
        routes = {targets[0]: _text(body, "target_url")}
    if not isinstance(routes, dict) or set(routes) != set(targets) or not all(
            isinstance(u, str) and u for u in routes.values()):
        raise InvalidArgument(f"targets must map every target shard ({', '.join(targets)}) "
                              f"to its primary's URL")
    return {str(k): str(v) for k, v in routes.items()}


async def _read_body(request: web.Request, use_list: bool = True) -> dict[str, Any]:
    if request.method == "GET":
        return {}
    # ``content.read(n)`` answers what has arrived so far, up to n bytes: read to the end
    # (a batch of a few thousand records spans many chunks), bounded.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 16):
        size += len(chunk)
        if size > MAX_FRAME_BYTES:
            raise InvalidArgument("the body is too large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    content_type = (request.headers.get("Content-Type") or "").lower()
    try:
        body = (wire.unpack(raw, use_list=use_list) if wire.MSGPACK in content_type
                else wire.from_json(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the body cannot be decoded: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be an object")
    return body


def _respond(request: web.Request, body: Any, status: int) -> web.Response:
    if wire.MSGPACK in (request.headers.get("Accept") or "").lower():
        return web.Response(body=wire.pack(body), status=status, content_type=wire.MSGPACK)
    return web.Response(body=wire.to_json(body), status=status, content_type=wire.JSON)
