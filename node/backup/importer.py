"""``POST /admin/backup/import``: a batch of restored rows written as one entry of this
shard's log, for ``shardkv backup restore``.

The body (msgpack) is ``{"records": [[kind, key, value, expires_at], ...]}`` with kind 1 (put)
or 2 (delete), values as the client wrote them and expiry as an absolute Unix time, so a
restored key keeps its exact expiry (a TTL through the client would be re-based on the
restore's clock). Only the primary takes it (``NOT_PRIMARY`` names it otherwise), every key
must be this shard's under the node's map (``STALE_MAP`` otherwise: the restore tool then
re-reads the map and routes again), values are bounded as a put's are, and the batch is
applied under the write concern like any write (``Store.write_imported``). An ``/admin/``
route: the internal guard authorizes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from shardkv.cluster import wire
from shardkv.cluster.errors import InvalidArgument, NotPrimary, ShardKVError, TooLarge
from shardkv.cluster.http_body import error_response, respond
from shardkv.cluster.limits import as_key
from shardkv.node.storage.compression import encode_value
from shardkv.node.storage.sessions import is_reserved
from shardkv.node.wal.record import Mutation, MutationKind

if TYPE_CHECKING:
    from shardkv.node.api.node_context import NodeContext

IMPORT_PATH = "/admin/backup/import"
MAX_RECORDS = 10_000


class BackupImport:
    def __init__(self, ctx: Callable[[], NodeContext]) -> None:
        self._ctx = ctx
        self.batches = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.post(IMPORT_PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            ctx = self._ctx()
            if ctx.role != "primary":
                raise NotPrimary(f"this node is a {ctx.role}; restores go to the primary",
                                 primary=ctx.primary)
            store = ctx.serving_store()
            mutations = self._mutations(ctx, await request.read())
            lsn = await store.write_imported(mutations) if mutations else store.last_lsn
        except ShardKVError as exc:
            return error_response(request, exc)
        self.batches += 1
        return respond(request, {"applied": len(mutations), "lsn": lsn})

    @staticmethod
    def _mutations(ctx: NodeContext, raw: bytes) -> list[Mutation]:
        try:
            body = wire.unpack(raw)
        except ValueError as exc:
            raise InvalidArgument(f"the body is not msgpack: {exc}") from None
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or len(records) > MAX_RECORDS:
            raise InvalidArgument(f"records must be a list of at most {MAX_RECORDS}")
        limit = ctx.limits.max_value_bytes
        mutations = []
        for record in records:
            kind, key, value, expires_at = _parse(record)
            if is_reserved(key):
                raise InvalidArgument("reserved keys are not restored")
            if ctx.owns_key is not None:
                ctx.owns_key(key)  # STALE_MAP for a key another shard owns
            if kind == int(MutationKind.PUT):
                if len(value) > limit:
                    raise TooLarge(f"a value of {len(value)} bytes is over the limit of {limit}")
                stored, compressed = encode_value(value)
                mutations.append(Mutation(MutationKind.PUT, key, stored, compressed, expires_at))
            else:
                mutations.append(Mutation(MutationKind.DELETE, key))
        return mutations


def _parse(record: Any) -> tuple[int, bytes, bytes, float | None]:
    if not isinstance(record, list | tuple) or len(record) != 4:
        raise InvalidArgument("a record is [kind, key, value, expires_at]")
    kind, key, value, expires_at = record
    if kind not in (int(MutationKind.PUT), int(MutationKind.DELETE)):
        raise InvalidArgument(f"record kind must be 1 (put) or 2 (delete), got {kind!r}")
    if not isinstance(value, bytes | bytearray):
        raise InvalidArgument("record value must be bytes")
    if expires_at is not None and (isinstance(expires_at, bool)
                                   or not isinstance(expires_at, int | float)):
        raise InvalidArgument("record expires_at must be a number or nil")
    return kind, as_key(key), bytes(value), None if expires_at is None else float(expires_at)
