"""The coordinator leader's migration driver: moves the running migration forward.

Stateless by design (docs/resharding.md, "Resume"): each round reads the record from the map
and asks the nodes where they are, so a new leader simply starts driving. Rounds:

- ``copying``/``catching_up``: wait for every target shard's primary; raise their LSN floor
  once (recorded in the map); make every source primary export to them (a new attempt when
  a source or target primary changed or the export failed); publish progress about once a
  second; when every source is in its log tail and close behind, commit ``flipping``.
- ``flipping``: ask every source primary to fence and ship to its end; with all the epochs,
  propose the flip (refused if a source changed primary: back to ``copying``).
- ``cleaning``: have every source primary delete what it no longer owns; then ``done``.
- no migration running, but an aborted remove or reweight left ``leftovers``: have each of
  those target primaries delete what it does not own, then ``leftovers_cleaned``.

An export that keeps failing, or a target without a primary, ends the migration ``failed``
(before the flip) after ``GIVE_UP_S``; an operator may abort before the flip at any time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import aiohttp
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.cluster_token import auth_headers
from shardkv.cluster.errors import ShardKVError, StaleEpoch, error_from_dict
from shardkv.cluster.migration_record import (
    CATCHING_UP,
    CLEANING,
    COPYING,
    DONE,
    FAILED,
    FLIPPING,
    MigrationRecord,
)
from shardkv.cluster.structured_log import log_fields

logger = logging.getLogger(__name__)

ROUND_S = 0.2
PROGRESS_EVERY_S = 1.0
FLIP_LAG_ENTRIES = 2000
FLOOR_GAP = 2**32
GIVE_UP_S = 120.0
FENCE_TIMEOUT_S = 45.0
FLOOR_TIMEOUT_S = 120.0


class MigrationDriver:
    def __init__(self, coord: Any, session: aiohttp.ClientSession) -> None:
        self.coord = coord
        self.session = session
        self._attempts: dict[tuple[str, str], str] = {}  # (migration, source) -> attempt
        self._exported_to: dict[tuple[str, str], tuple[str, Any]] = {}
        self._counter = itertools.count(1)
        self._last_progress = 0.0
        self._trouble_since: float | None = None
        self._last_keys = (0, time.monotonic())

    async def run(self) -> None:
        while True:
            record = self.coord.watch.current.migration
            if record is None:
                record = next((r for r in self.coord.watch.current.migrations if r.leftovers),
                              None)
            if record is not None:
                try:
                    await self.step(self.coord.watch.current, record)
                except ShardKVError as exc:
                    logger.info("migration round: %s", exc, extra=log_fields(
                        migration=record.id, state=record.state, error=exc.code.value))
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    logger.info("migration round: %r", exc, extra=log_fields(
                        migration=record.id, state=record.state))
                except Exception:  # a bug must not stop the driver for good
                    logger.exception("migration round failed", extra=log_fields(
                        migration=record.id, state=record.state))
            await asyncio.sleep(ROUND_S)

    async def step(self, m: ClusterMap, record: MigrationRecord) -> None:
        if not record.running:
            await self._clean_leftovers(m, record)
        elif record.state in (COPYING, CATCHING_UP):
            await self._copy(m, record)
        elif record.state == FLIPPING:
            await self._flip(m, record)
        elif record.state == CLEANING:
            await self._clean(m, record)

    # -- node calls ----------------------------------------------------------------------

    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None,
                    timeout_s: float = 10.0) -> Any:
        headers = {"Accept": wire.MSGPACK, **auth_headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = wire.MSGPACK
            data = wire.pack(body)
        async with self.session.request(method, url, data=data, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            raw = await resp.read()
            if not raw:
                answer = None
            elif wire.MSGPACK in (resp.content_type or ""):
                answer = wire.unpack(raw)
            else:
                answer = wire.from_json(raw)
            if resp.status != 200:
                if isinstance(answer, dict) and "error" in answer:
                    raise error_from_dict(answer)
                raise ShardKVError(f"{url} answered {resp.status}")
            return answer

    def _primary_url(self, m: ClusterMap, shard: str) -> str | None:
        node = m.primary_of(shard)
        return node.url if node else None

    def _trouble(self) -> bool:
        """Start or continue the clock of a stuck migration; True once it ran out."""
        now = time.monotonic()
        if self._trouble_since is None:
            self._trouble_since = now
        return now - self._trouble_since > GIVE_UP_S

    async def _fail(self, record: MigrationRecord, error: str) -> None:
        logger.warning("migration failed", extra=log_fields(migration=record.id, error=error))
        await self.coord.propose({"op": "abort_migration", "id": record.id, "state": FAILED,
                                  "error": error, "now": time.time()})

    # -- copying -------------------------------------------------------------------------

    def _target_routes(self, m: ClusterMap, record: MigrationRecord) -> dict[str, str] | None:
        routes = {t: self._primary_url(m, t) for t in record.targets}
        if any(url is None for url in routes.values()):
            return None
        return {t: str(url) for t, url in routes.items()}

    async def _copy(self, m: ClusterMap, record: MigrationRecord) -> None:
        routes = self._target_routes(m, record)
        if routes is None:
            if self._trouble():
                missing = [t for t in record.targets if self._primary_url(m, t) is None]
                await self._fail(record, f"target shard {', '.join(missing)} has no primary")
            return
        if record.lsn_floor is None:
            lsns = []
            for source in record.sources:
                url = self._primary_url(m, source)
                if url is None:
                    return
                status = await self._call("GET", f"{url}/v1/status")
                lsns.append(int(status.get("last_lsn") or 0))
            floor = max(lsns, default=0) + FLOOR_GAP
            answers = await self._raise_floors(routes, floor)
            # Where each target's log stopped before its jump: a watch of that target that
            # got everything up to there resumes at the floor (docs/watch.md).
            jumped = {t: int(a["jumped_from"]) for t, a in zip(routes, answers, strict=True)
                      if isinstance(a, dict) and a.get("jumped_from") is not None}
            await self.coord.propose({"op": "migration_progress", "id": record.id,
                                      "lsn_floor": floor, "floor_from": jumped,
                                      "now": time.time()})
            return
        # Idempotent: a new target primary has the floor already (from the snapshot).
        await self._raise_floors(routes, record.lsn_floor)
        statuses = []
        for source in record.sources:
            status = await self._export(m, record, source, routes)
            if status is None:
                return
            statuses.append(status)
        failed = [s for s in statuses if s.get("phase") == "failed"]
        if failed:
            if self._trouble():
                await self._fail(record, f"export keeps failing: {failed[0].get('error')}")
            return
        self._trouble_since = None
        await self._publish_progress(record, statuses)
        caught_up = all(s.get("phase") == "tail" and
                        s["applied_lsn"] - s["shipped_lsn"] < FLIP_LAG_ENTRIES for s in statuses)
        if caught_up:
            await self.coord.propose({"op": "migration_state", "id": record.id,
                                      "state": FLIPPING, "now": time.time()})
            # Straight on to the fence: the sources hold requests for the moving keys from
            # the moment they see this map, so waiting for the next round (ROUND_S) was a
            # stall of up to 200 ms for every client at every flip.
            now = self.coord.watch.current
            flipping = now.migration
            if flipping is not None and flipping.id == record.id and flipping.state == FLIPPING:
                await self._flip(now, flipping)

    async def _raise_floors(self, routes: dict[str, str], floor: int) -> list[Any]:
        """Every target's LSN floor (a target that holds keys writes a snapshot: allow it
        time, and do the targets side by side); the answers, in ``routes`` order."""
        return await asyncio.gather(*(
            self._call("POST", f"{url}/internal/migration/floor", {"lsn": floor},
                       timeout_s=FLOOR_TIMEOUT_S)
            for url in routes.values()))

    async def _export(self, m: ClusterMap, record: MigrationRecord, source: str,
                      routes: dict[str, str]) -> dict[str, Any] | None:
        url = self._primary_url(m, source)
        if url is None:
            return None
        key = (record.id, source)
        status = await self._call("GET", f"{url}/internal/migration/export")
        placed = (url, tuple(sorted(routes.items())))
        attempt = self._attempts.get(key)
        fresh = (attempt is None or self._exported_to.get(key) != placed
                 or status.get("attempt") != attempt or status.get("phase") == "failed")
        if fresh:
            attempt = f"{self.coord.config.id}-{next(self._counter)}"
            self._attempts[key] = attempt
            self._exported_to[key] = placed
            logger.info("export started", extra=log_fields(
                migration=record.id, source=source, attempt=attempt, targets=routes))
            status = await self._call("POST", f"{url}/internal/migration/export",
                                      {"id": record.id, "attempt": attempt,
                                       "targets": routes})
        return status

    async def _publish_progress(self, record: MigrationRecord,
                                statuses: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S:
            return
        keys = sum(int(s.get("keys_sent") or 0) for s in statuses)
        size = sum(int(s.get("bytes_sent") or 0) for s in statuses)
        last_keys, last_at = self._last_keys
        rate = max(0.0, (keys - last_keys) / max(now - last_at, 1e-3))
        self._last_keys = (keys, now)
        self._last_progress = now
        total = sum(int(s.get("snapshot_keys") or 0) for s in statuses)
        await self.coord.propose({"op": "migration_progress", "id": record.id,
                                  "keys_moved": keys, "bytes_moved": size,
                                  "keys_total": total, "rate_keys_s": round(rate, 1)})

    # -- flipping ------------------------------------------------------------------------

    async def _flip(self, m: ClusterMap, record: MigrationRecord) -> None:
        async def fence(source: str) -> dict[str, Any]:
            url = self._primary_url(m, source)
            if url is None:
                raise StaleEpoch(f"source shard {source} has no primary")
            return await self._call("POST", f"{url}/internal/migration/fence",
                                    {"id": record.id, "map_version": m.version},
                                    timeout_s=FENCE_TIMEOUT_S)
        try:
            answers = await asyncio.gather(*(fence(s) for s in record.sources))
            epochs = {s: int(a["epoch"]) for s, a in zip(record.sources, answers, strict=True)}
            await self.coord.propose({"op": "flip_migration", "id": record.id,
                                      "epochs": epochs, "lsns": flip_lsns(record, answers),
                                      "now": time.time()})
        except (ShardKVError, aiohttp.ClientError, TimeoutError) as exc:
            # Lift the fence and catch up again: a source changed primary, or the fence took
            # too long (the moving keys must not stay unwritable).
            logger.info("fence failed; back to copying: %r", exc, extra=log_fields(
                migration=record.id))
            await self.coord.propose({"op": "migration_state", "id": record.id,
                                      "state": COPYING, "now": time.time()})
            return
        keys = sum(int(a.get("keys_sent") or 0) for a in answers)
        size = sum(int(a.get("bytes_sent") or 0) for a in answers)
        logger.info("ring flipped", extra=log_fields(migration=record.id, keys=keys))
        await self.coord.propose({"op": "migration_progress", "id": record.id,
                                  "keys_moved": keys, "bytes_moved": size})

    # -- cleaning ------------------------------------------------------------------------

    async def _clean(self, m: ClusterMap, record: MigrationRecord) -> None:
        done = True
        for source in record.sources:
            url = self._primary_url(m, source)
            if url is None:
                return
            status = await self._call("POST", f"{url}/internal/migration/clean",
                                      {"id": record.id, "ring_version": m.ring.version})
            done = done and bool(status.get("done"))
        if done:
            await self.coord.propose({"op": "migration_state", "id": record.id,
                                      "state": DONE, "now": time.time()})

    async def _clean_leftovers(self, m: ClusterMap, record: MigrationRecord) -> None:
        """An aborted remove or reweight: its targets delete the keys they received but do
        not own (their cleaner keeps exactly what the current ring gives them)."""
        for shard in list(record.leftovers):
            url = self._primary_url(m, shard)
            if shard not in m.shards:
                url = None  # gone from the map: nothing left to clean there
            elif url is None:
                continue
            status = {"done": True} if url is None else await self._call(
                "POST", f"{url}/internal/migration/clean",
                {"id": record.id, "ring_version": m.ring.version, "map_version": m.version})
            if status.get("done"):
                await self.coord.propose({"op": "leftovers_cleaned", "id": record.id,
                                          "shard": shard})


def flip_lsns(record: MigrationRecord, answers: list[dict[str, Any]]) -> dict[str, int]:
    """Where each shard's log crosses the flip, for watches (docs/watch.md, "Resharding"):
    a source's fenced LSN (its writes to moved keys are at or below it, its clean-up
    comes after the flip, above it); a target's highest import LSN any source saw
    acknowledged, at least the floor (its own writes to moved keys come after the flip,
    above every import)."""
    lsns = {s: int(a["fenced_lsn"]) for s, a in zip(record.sources, answers, strict=True)}
    for target in record.targets:
        seen = [int((a.get("target_lsns") or {}).get(target) or 0) for a in answers]
        lsns[target] = max([record.lsn_floor or 0, *seen])
    return lsns


def install(coord: Any) -> None:
    """Run the driver as a leader task (started and cancelled with leadership)."""
    async def run_driver(c: Any) -> None:
        async with aiohttp.ClientSession() as session:
            await MigrationDriver(c, session).run()

    coord.leader_task_factories.append(run_driver)
