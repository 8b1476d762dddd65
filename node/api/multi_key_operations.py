"""The multi-key operations: mget, mput, mdelete, batch and scan.

Each bounds what it reads or answers: an mget or a scan stops as soon as its answer would
pass ``max_answer_bytes`` (a scan with a cursor to go on from, an mget with ``TOO_LARGE``), a
write batch is refused over ``max_batch_ops``/``max_batch_bytes`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shardkv.cluster.errors import InvalidArgument, TooLarge
from shardkv.cluster.limits import MAX_SCAN_LIMIT, as_key, as_ttl, as_value, as_version
from shardkv.node.api.arguments import (
    check_read_options,
    check_write_concern,
    item_body,
    key_list,
    opt_bytes,
    required,
    session_of,
)
from shardkv.node.api.node_context import Args, NodeContext
from shardkv.node.storage.scan_cursor import next_cursor
from shardkv.node.storage.write_plan import CheckedOp

if TYPE_CHECKING:
    from shardkv.node.storage.store import Store

ANSWER_ITEM_OVERHEAD = 32  # msgpack framing and the version, per item, roughly
MGET_CHUNK = 64


def too_large_answer(ctx: NodeContext, what: str) -> TooLarge:
    cap = ctx.limits.max_answer_bytes
    return TooLarge(f"{what} would answer more than {cap} bytes (max_answer_bytes); ask for "
                    "fewer keys at a time", max_answer_bytes=cap)


async def mget(ctx: NodeContext, args: Args) -> dict[str, Any]:
    """Read in small chunks and stop as soon as the answer would pass the byte cap: the same
    1 MiB key asked 1,000 times is refused after 16, never built into a 1 GiB answer."""
    keys = key_list(args, "keys", ctx.limits.max_batch_ops)
    store = ctx.serving_store()
    check_read_options(ctx, store, args)
    cap = ctx.limits.max_answer_bytes
    size = 0
    items: list[Any] = []
    for i in range(0, len(keys), MGET_CHUNK):
        chunk = keys[i:i + MGET_CHUNK]
        for key, it in zip(chunk, await store.mget(chunk), strict=True):
            size += len(key) + ANSWER_ITEM_OVERHEAD + (len(it.value) if it is not None else 0)
            if size > cap:
                raise too_large_answer(ctx, f"mget of {len(keys)} keys")
            items.append(None if it is None else item_body(it))
    return {"items": items}


def check_batch_size(ctx: NodeContext, count: int, payload_bytes: int) -> None:
    limits = ctx.limits
    if count > limits.max_batch_ops:
        raise TooLarge(f"{count} operations in one request; the limit is {limits.max_batch_ops}")
    if payload_bytes > limits.max_batch_bytes:
        raise TooLarge(
            f"{payload_bytes} bytes in one request; the limit is {limits.max_batch_bytes}"
        )


async def mput(ctx: NodeContext, args: Args) -> dict[str, Any]:
    raw = required(args, "items")
    if not isinstance(raw, list | tuple):
        raise InvalidArgument(f"items must be a list of [key, value] pairs, not "
                              f"{type(raw).__name__}")
    items: list[tuple[bytes, bytes]] = []
    size = 0
    for pair in raw:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise InvalidArgument("items must be a list of [key, value] pairs")
        key, value = as_key(pair[0]), as_value(pair[1], ctx.limits)
        size += len(key) + len(value)
        items.append((key, value))
    if not items:
        raise InvalidArgument("items must not be empty")
    check_batch_size(ctx, len(items), size)
    ttl = as_ttl(args.get("ttl"))
    check_write_concern(args)
    version = await ctx.serving_store().mput(items, ttl=ttl, session=session_of(args))
    return {"version": version}


async def mdelete(ctx: NodeContext, args: Args) -> dict[str, Any]:
    keys = key_list(args, "keys", ctx.limits.max_batch_ops)
    if not keys:
        raise InvalidArgument("keys must not be empty")
    check_write_concern(args)
    deleted, version = await ctx.serving_store().mdelete(keys, session=session_of(args))
    return {"deleted": deleted, "version": version}


_BATCH_OP_FIELDS = frozenset({"op", "key", "value", "if_version", "if_absent", "ttl"})


def parse_batch_ops(ctx: NodeContext, raw: object) -> list[CheckedOp]:
    """A batch's ``ops`` list -> CheckedOps, every field checked before anything is written.

    This is the one place a request's batch ops are validated: it makes every check the
    Store's ``check_batch`` makes (and refuses unknown fields, which only the wire can carry),
    so ``batch`` hands the result to ``Store.batch_checked`` and nothing is checked twice.
    It runs once per op of every batch, hence the inlined common cases (an absent optional
    field is one ``dict.get``)."""
    if not isinstance(raw, list | tuple):
        raise InvalidArgument(f"ops must be a list, not {type(raw).__name__}")
    if not raw:
        raise InvalidArgument("ops must not be empty")
    limits = ctx.limits
    if len(raw) > limits.max_batch_ops:
        check_batch_size(ctx, len(raw), 0)
    ops: list[CheckedOp] = []
    append = ops.append
    fields = _BATCH_OP_FIELDS
    size = 0
    for index, spec in enumerate(raw):
        if not isinstance(spec, Mapping):
            raise InvalidArgument(f"ops[{index}] must be a map, not {type(spec).__name__}")
        if not fields.issuperset(spec):
            extra = spec.keys() - fields
            raise InvalidArgument(f"ops[{index}] has unknown field(s) {sorted(map(str, extra))}")
        get = spec.get
        kind = get("op")
        key = as_key(get("key"))
        if_version = get("if_version")
        if if_version is not None:
            if_version = as_version(if_version, "if_version")
        if kind == "put":
            value = as_value(required(spec, "value"), limits)
            if_absent = get("if_absent")
            if if_absent is None:
                if_absent = False
            elif not isinstance(if_absent, bool):
                raise InvalidArgument(f"if_absent must be true or false, got {if_absent!r}")
            elif if_absent and if_version is not None:
                raise InvalidArgument(f"ops[{index}]: if_absent and if_version cannot be "
                                      f"combined")
            ttl = get("ttl")
            if ttl is not None:
                ttl = as_ttl(ttl)
            append(CheckedOp("put", key, value, if_version, if_absent, ttl))
            size += len(key) + len(value)
        elif kind == "delete":
            if get("value") is not None or get("ttl") is not None or get("if_absent"):
                raise InvalidArgument(f"ops[{index}]: a delete takes only key and if_version")
            append(CheckedOp("delete", key, b"", if_version, False, None))
            size += len(key)
        else:
            raise InvalidArgument(f"ops[{index}].op must be 'put' or 'delete', got {kind!r}")
    check_batch_size(ctx, len(ops), size)
    return ops


async def batch(ctx: NodeContext, args: Args) -> dict[str, Any]:
    ops = parse_batch_ops(ctx, required(args, "ops"))
    check_write_concern(args)
    result = await ctx.serving_store().batch_checked(ops, session=session_of(args))
    return {"version": result.version, "results": list(result.results)}


async def scan(ctx: NodeContext, args: Args) -> dict[str, Any]:
    prefix = opt_bytes(args, "prefix")
    start = opt_bytes(args, "start")
    end = opt_bytes(args, "end")
    if prefix is not None and (start is not None or end is not None):
        raise InvalidArgument("scan takes either prefix or start/end, not both")
    cursor = opt_bytes(args, "cursor")
    limit = args.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN_LIMIT:
        raise InvalidArgument(f"limit must be an integer in [1, {MAX_SCAN_LIMIT}], got {limit!r}")
    store = ctx.serving_store()
    check_read_options(ctx, store, args)
    return await scan_by_bytes(ctx, store, prefix, start, end, cursor, limit)


SCAN_CHUNK = 100


async def scan_by_bytes(ctx: NodeContext, store: Store, prefix: bytes | None,
                         start: bytes | None, end: bytes | None, cursor: bytes | None,
                         limit: int) -> dict[str, Any]:
    """A page of at most ``limit`` items and at most ``max_answer_bytes`` (at least one item,
    which is at most a value and a key): read in chunks, stopping early with a cursor."""
    cap = ctx.limits.max_answer_bytes
    size = 0
    items: list[list[Any]] = []
    while len(items) < limit:
        want = min(SCAN_CHUNK, limit - len(items))
        page = await store.scan(prefix=prefix, start=start, end=end, cursor=cursor, limit=want)
        for key, item in page.items:
            size += len(key) + len(item.value) + ANSWER_ITEM_OVERHEAD
            if size > cap and items:
                return {"items": items, "cursor": next_cursor(items[-1][0])}
            items.append([key, item.value, item.version])
        cursor = page.cursor
        if cursor is None:
            break
    return {"items": items, "cursor": cursor}
