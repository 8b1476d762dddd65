"""The operator's side of online migrations (docs/resharding.md), behind the admin token.

- ``POST /admin/shards`` ``{"shard"?, "weight"?}`` (in admin_api.py) starts adding a shard:
  ``202 {"migration": id, "shard": id}``.
- ``GET /admin/migrations``: the running migration and the recent finished ones.
- ``GET /admin/migrations/{id}``: one of them.
- ``POST /admin/migrations/{id}/abort``: before the flip only.
- ``DELETE /admin/shards/{id}``: drain the shard into the others and retire it:
  ``202 {"migration": id, "shard": id}``.
- ``PUT /admin/shards/{id}/weight`` ``{"weight": n}``: move the shard's share:
  ``202 {"migration": id, "shard": id}``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web
from shardkv.cluster.errors import NotFound
from shardkv.coordinator.http_io import coordinator_of, only_fields, read_object, respond


def new_migration_id() -> str:
    return f"m{int(time.time())}-{secrets.token_hex(3)}"


async def begin_add(coord: Any, body: dict[str, Any]) -> dict[str, Any]:
    only_fields(body, {"shard", "weight"})
    command = {"op": "begin_migration", "id": new_migration_id(), "kind": "add",
               "now": time.time(), **body}
    return await coord.propose(command)


async def list_migrations(request: web.Request) -> web.StreamResponse:
    m = coordinator_of(request).watch.current
    return respond(request, {
        "map_version": m.version,
        "migration": None if m.migration is None else m.migration.to_dict(),
        "migrations": [r.to_dict() for r in reversed(m.migrations)],
    })


async def get_migration(request: web.Request) -> web.StreamResponse:
    m = coordinator_of(request).watch.current
    record = m.find_migration(request.match_info["migration"])
    if record is None:
        raise NotFound(f"no migration {request.match_info['migration']!r}")
    return respond(request, record.to_dict())


async def abort_migration(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    await read_object(request, allow_empty=True)
    result = await coord.propose({"op": "abort_migration", "id": request.match_info["migration"],
                                  "state": "aborted", "error": "aborted by the operator",
                                  "now": time.time()})
    return respond(request, result)


async def remove_shard(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    await read_object(request, allow_empty=True)
    result = await coord.propose({"op": "begin_migration", "id": new_migration_id(),
                                  "kind": "remove", "shard": request.match_info["shard"],
                                  "now": time.time()})
    return respond(request, result, status=202)


async def set_weight(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    body = await read_object(request)
    only_fields(body, {"weight"})
    result = await coord.propose({"op": "begin_migration", "id": new_migration_id(),
                                  "kind": "weight", "shard": request.match_info["shard"],
                                  "weight": body.get("weight"), "now": time.time()})
    return respond(request, result, status=202)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/migrations", list_migrations)
    r.add_get("/admin/migrations/{migration}", get_migration)
    r.add_post("/admin/migrations/{migration}/abort", abort_migration)
    r.add_delete("/admin/shards/{shard}", remove_shard)
    r.add_put("/admin/shards/{shard}/weight", set_weight)
