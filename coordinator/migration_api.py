"""The operator's side of online migrations (docs/resharding.md), behind the admin token.

- ``POST /admin/shards`` ``{"shard"?, "weight"?}`` (in admin_api.py) starts adding a shard:
  ``202 {"migration": id, "shard": id}``.
- ``GET /admin/migrations``: the running migration and the recent finished ones.
- ``GET /admin/migrations/{id}``: one of them.
- ``POST /admin/migrations/{id}/abort``: before the flip only.
- ``DELETE /admin/shards/{id}`` and ``PUT /admin/shards/{id}/weight``: not built yet; they
  answer ``400 INVALID_ARGUMENT`` saying so and change nothing.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web
from shardkv.cluster.errors import InvalidArgument, NotFound
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


async def not_built(request: web.Request) -> web.StreamResponse:
    what = "removing a shard" if request.method == "DELETE" else "changing a shard's weight"
    raise InvalidArgument(f"{what} is not supported yet: online migration can only add a "
                          f"shard so far (docs/resharding.md); the map is unchanged")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/migrations", list_migrations)
    r.add_get("/admin/migrations/{migration}", get_migration)
    r.add_post("/admin/migrations/{migration}/abort", abort_migration)
    r.add_delete("/admin/shards/{shard}", not_built)
    r.add_put("/admin/shards/{shard}/weight", not_built)
