"""The node's operations: one table from op name to argument parsing and a Store call.

``/v1/rpc``, ``/v1/batch`` and the REST key routes all go through :func:`execute`, so an op
means the same thing, checks the same arguments and answers the same shape however it
arrives. Arguments are checked completely before the Store is touched: a request with a
wrong type, an unknown argument name (a typo such as ``if_verison`` must not silently turn a
compare-and-swap into a blind write) or a value over a limit is answered with
``INVALID_ARGUMENT``/``TOO_LARGE`` and writes nothing.

The dispatch is on the hot path of the rpc benchmark, so it is a dict lookup, a set
difference and a direct call: no per-request logging, no reflection.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shardkv.cluster.errors import (
    InternalError,
    InvalidArgument,
    NotFound,
    NotPrimary,
    ShardKVError,
    StaleMap,
    Timeout,
    TooLarge,
    TooStale,
    Unavailable,
    UnknownOp,
)
from shardkv.cluster.limits import (
    MAX_SCAN_LIMIT,
    Limits,
    as_key,
    as_ttl,
    as_value,
    as_version,
    limits_dict,
)
from shardkv.cluster.ops import OPS, OpSpec
from shardkv.node.storage.commit_pipeline import WRITE_CONCERN
from shardkv.node.storage.disk_report import disk_summary
from shardkv.node.storage.scan_cursor import next_cursor
from shardkv.node.storage.sessions import Session, check_user_key, parse_session
from shardkv.node.storage.write_plan import CheckedOp
from shardkv.node.testing import negative_controls

if TYPE_CHECKING:
    from shardkv.node.storage.store import Store

Args = Mapping[str, Any]
Handler = Callable[["NodeContext", Args], Awaitable[Any]]

CONSISTENCY_LEVELS = ("strong", "eventual")
WRITE_CONCERNS = ("majority", "one")


class WriteFence(Protocol):
    def enter(self, keys: Iterable[bytes], writes: bool) -> bool: ...
    def leave(self) -> None: ...


@dataclass(slots=True)
class NodeContext:
    """What an operation needs from the node serving it.

    ``store`` is None while the node recovers or after it has stopped (requests then get
    ``UNAVAILABLE``, which a client retries). ``role`` is ``primary`` for a standalone node;
    the replication layer sets ``replica`` (writes then answer ``NOT_PRIMARY`` naming
    ``primary``) and ``ring_version`` once the node knows the cluster's ring.
    """

    limits: Limits = field(default_factory=Limits)
    store: Store | None = None
    role: str = "primary"
    node_id: str | None = None
    primary: dict[str, Any] | None = None
    ring_version: int | None = None
    # In a cluster: raises STALE_MAP for a key another shard owns (set by cluster_membership).
    owns_key: Callable[[bytes], None] | None = None
    # Set by replication (node/replication/shard_role.py): the role's read rules (a replica's
    # staleness bound, a primary's lease), and how long a write may wait for its concern.
    read_guard: Callable[[Args], None] | None = None
    write_timeout_s: float | None = None
    # Set by node/migration: refuses requests for fenced moving arcs, counts writes in flight.
    write_fence: WriteFence | None = None
    # Set by the server (node/replication/readiness.py): a replica's catch-up state, None on
    # other roles; /ready is 503 while it is not caught up.
    catch_up: Callable[[], dict[str, Any] | None] | None = None

    def serving_store(self) -> Store:
        store = self.store
        if store is None:
            raise Unavailable("the node is not serving (starting up or shutting down)")
        return store


@dataclass(frozen=True, slots=True)
class Operation:
    """One op: its spec (``cluster/ops.py``: arguments, keys, write or not) and its handler.
    ``allowed`` and ``writes`` are copied from the spec for the hot path."""

    spec: OpSpec
    handler: Handler
    allowed: frozenset[str]
    writes: bool
    # The op names exactly one key, in ``key`` (get, put, ...): checked without building a
    # list. Worked out once here, not per request (``spec.key_args`` builds a tuple).
    single_key: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------------------------------------
# Argument parsing. Each function names the argument in its error so the caller can fix it.


def _required(args: Args, name: str) -> Any:
    try:
        return args[name]
    except KeyError:
        raise InvalidArgument(f"missing argument {name!r}") from None


def _key(args: Args, name: str = "key") -> bytes:
    return as_key(_required(args, name))


def _opt_version(args: Args, name: str) -> int | None:
    raw = args.get(name)
    return None if raw is None else as_version(raw, name)


def _opt_bool(args: Args, name: str) -> bool:
    raw = args.get(name, False)
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise InvalidArgument(f"{name} must be true or false, got {raw!r}")
    return raw


def _opt_bytes(args: Args, name: str) -> bytes | None:
    raw = args.get(name)
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    raise InvalidArgument(f"{name} must be bytes, not {type(raw).__name__}")


def _key_list(args: Args, name: str, limit: int) -> list[bytes]:
    raw = _required(args, name)
    if not isinstance(raw, list | tuple):
        raise InvalidArgument(f"{name} must be a list of keys, not {type(raw).__name__}")
    if len(raw) > limit:
        raise TooLarge(f"{name} has {len(raw)} keys; the limit is {limit}")
    return [as_key(k) for k in raw]


def _check_read_options(ctx: NodeContext, store: Store, args: Args) -> None:
    """``consistency``, ``max_staleness_ms`` and ``min_version`` are accepted on every read;
    the primary holds every acknowledged write, so it satisfies any staleness bound, and a
    ``min_version`` beyond its last LSN means this node is behind the writer the client saw."""
    consistency = args.get("consistency")
    if consistency is not None and consistency not in CONSISTENCY_LEVELS:
        raise InvalidArgument(f"consistency must be one of {CONSISTENCY_LEVELS}, got "
                              f"{consistency!r}")
    staleness = args.get("max_staleness_ms")
    if staleness is not None and (
        isinstance(staleness, bool) or not isinstance(staleness, int | float)
        or not 0 <= staleness < math.inf
    ):
        raise InvalidArgument(f"max_staleness_ms must be a non-negative number, got "
                              f"{staleness!r}")
    min_version = _opt_version(args, "min_version")
    if min_version is not None and min_version > store.last_lsn:
        raise TooStale(
            f"this node is at version {store.last_lsn}, older than min_version {min_version}",
            last_lsn=store.last_lsn,
        )
    if ctx.read_guard is not None:
        ctx.read_guard(args)


def _session(args: Args) -> Session | None:
    """The write's client session (``client_id`` + ``seq``), or None for an unstamped write."""
    if "seq" not in args and "client_id" not in args:
        return None
    return parse_session(args.get("client_id"), args.get("seq"))


def _check_write_concern(args: Args) -> None:
    w = args.get("w")
    if w is not None and w not in WRITE_CONCERNS:
        raise InvalidArgument(f"w must be one of {WRITE_CONCERNS}, got {w!r}")


def _item_body(item: Any) -> dict[str, Any]:
    return {"value": item.value, "version": item.version, "expires_at": item.expires_at}


# ---------------------------------------------------------------------------------------------
# Handlers: parse everything first, then make exactly one Store call.


async def _get(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = _key(args)
    store = ctx.serving_store()
    _check_read_options(ctx, store, args)
    item = await store.get(key)
    if item is None:
        raise NotFound("key not found", key=key)
    return {"value": item.value, "version": item.version, "expires_at": item.expires_at}


async def _exists(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = _key(args)
    store = ctx.serving_store()
    _check_read_options(ctx, store, args)
    item = await store.exists(key)
    return {"exists": item is not None, "version": None if item is None else item.version}


async def _put(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = _key(args)
    value = as_value(_required(args, "value"), ctx.limits)
    if_version = _opt_version(args, "if_version")
    if_absent = _opt_bool(args, "if_absent")
    if if_absent and if_version is not None:
        raise InvalidArgument("if_absent and if_version cannot be combined")
    ttl = as_ttl(args.get("ttl"))
    _check_write_concern(args)
    version = await ctx.serving_store().put(
        key, value, if_version=if_version, if_absent=if_absent, ttl=ttl, session=_session(args)
    )
    return {"version": version}


async def _delete(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = _key(args)
    if_version = _opt_version(args, "if_version")
    _check_write_concern(args)
    result = await ctx.serving_store().delete(key, if_version=if_version, session=_session(args))
    return {"deleted": result.deleted, "version": result.version}


async def _incr(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = _key(args)
    delta = args.get("delta", 1)
    if isinstance(delta, bool) or not isinstance(delta, int) or not -(2**63) <= delta < 2**63:
        raise InvalidArgument(f"delta must be a 64-bit integer, got {delta!r}")
    _check_write_concern(args)
    if negative_controls.ENABLED:  # TEST ONLY (testing/negative_controls.py)
        delta = negative_controls.incr_delta(delta)
    value, version = await ctx.serving_store().incr(key, delta, session=_session(args))
    return {"value": value, "version": version}


ANSWER_ITEM_OVERHEAD = 32  # msgpack framing and the version, per item, roughly
MGET_CHUNK = 64


def _too_large_answer(ctx: NodeContext, what: str) -> TooLarge:
    cap = ctx.limits.max_answer_bytes
    return TooLarge(f"{what} would answer more than {cap} bytes (max_answer_bytes); ask for "
                    "fewer keys at a time", max_answer_bytes=cap)


async def _mget(ctx: NodeContext, args: Args) -> dict[str, Any]:
    """Read in small chunks and stop as soon as the answer would pass the byte cap: the same
    1 MiB key asked 1,000 times is refused after 16, never built into a 1 GiB answer."""
    keys = _key_list(args, "keys", ctx.limits.max_batch_ops)
    store = ctx.serving_store()
    _check_read_options(ctx, store, args)
    cap = ctx.limits.max_answer_bytes
    size = 0
    items: list[Any] = []
    for i in range(0, len(keys), MGET_CHUNK):
        chunk = keys[i:i + MGET_CHUNK]
        for key, it in zip(chunk, await store.mget(chunk), strict=True):
            size += len(key) + ANSWER_ITEM_OVERHEAD + (len(it.value) if it is not None else 0)
            if size > cap:
                raise _too_large_answer(ctx, f"mget of {len(keys)} keys")
            items.append(None if it is None else _item_body(it))
    return {"items": items}


def _check_batch_size(ctx: NodeContext, count: int, payload_bytes: int) -> None:
    limits = ctx.limits
    if count > limits.max_batch_ops:
        raise TooLarge(f"{count} operations in one request; the limit is {limits.max_batch_ops}")
    if payload_bytes > limits.max_batch_bytes:
        raise TooLarge(
            f"{payload_bytes} bytes in one request; the limit is {limits.max_batch_bytes}"
        )


async def _mput(ctx: NodeContext, args: Args) -> dict[str, Any]:
    raw = _required(args, "items")
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
    _check_batch_size(ctx, len(items), size)
    ttl = as_ttl(args.get("ttl"))
    _check_write_concern(args)
    version = await ctx.serving_store().mput(items, ttl=ttl, session=_session(args))
    return {"version": version}


async def _mdelete(ctx: NodeContext, args: Args) -> dict[str, Any]:
    keys = _key_list(args, "keys", ctx.limits.max_batch_ops)
    if not keys:
        raise InvalidArgument("keys must not be empty")
    _check_write_concern(args)
    deleted, version = await ctx.serving_store().mdelete(keys, session=_session(args))
    return {"deleted": deleted, "version": version}


_BATCH_OP_FIELDS = frozenset({"op", "key", "value", "if_version", "if_absent", "ttl"})


def parse_batch_ops(ctx: NodeContext, raw: object) -> list[CheckedOp]:
    """A batch's ``ops`` list -> CheckedOps, every field checked before anything is written.

    This is the one place a request's batch ops are validated: it makes every check the
    Store's ``check_batch`` makes (and refuses unknown fields, which only the wire can carry),
    so ``_batch`` hands the result to ``Store.batch_checked`` and nothing is checked twice.
    It runs once per op of every batch, hence the inlined common cases (an absent optional
    field is one ``dict.get``)."""
    if not isinstance(raw, list | tuple):
        raise InvalidArgument(f"ops must be a list, not {type(raw).__name__}")
    if not raw:
        raise InvalidArgument("ops must not be empty")
    limits = ctx.limits
    if len(raw) > limits.max_batch_ops:
        _check_batch_size(ctx, len(raw), 0)
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
            value = as_value(_required(spec, "value"), limits)
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
    _check_batch_size(ctx, len(ops), size)
    return ops


async def _batch(ctx: NodeContext, args: Args) -> dict[str, Any]:
    ops = parse_batch_ops(ctx, _required(args, "ops"))
    _check_write_concern(args)
    result = await ctx.serving_store().batch_checked(ops, session=_session(args))
    return {"version": result.version, "results": list(result.results)}


async def _scan(ctx: NodeContext, args: Args) -> dict[str, Any]:
    prefix = _opt_bytes(args, "prefix")
    start = _opt_bytes(args, "start")
    end = _opt_bytes(args, "end")
    if prefix is not None and (start is not None or end is not None):
        raise InvalidArgument("scan takes either prefix or start/end, not both")
    cursor = _opt_bytes(args, "cursor")
    limit = args.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN_LIMIT:
        raise InvalidArgument(f"limit must be an integer in [1, {MAX_SCAN_LIMIT}], got {limit!r}")
    store = ctx.serving_store()
    _check_read_options(ctx, store, args)
    return await _scan_by_bytes(ctx, store, prefix, start, end, cursor, limit)


SCAN_CHUNK = 100


async def _scan_by_bytes(ctx: NodeContext, store: Store, prefix: bytes | None,
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


async def _expire(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = _key(args)
    ttl = as_ttl(_required(args, "ttl"))
    if ttl is None:
        raise InvalidArgument("ttl must be a positive number of seconds")
    _check_write_concern(args)
    return {"version": await ctx.serving_store().expire(key, ttl, session=_session(args))}


async def _ttl(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = _key(args)
    store = ctx.serving_store()
    _check_read_options(ctx, store, args)
    return {"ttl": await store.ttl(key)}


async def _ping(ctx: NodeContext, args: Args) -> dict[str, Any]:
    store = ctx.store
    return {
        "lsn": None if store is None else store.last_lsn,
        "epoch": None if store is None else store.epoch,
        "role": ctx.role,
        "limits": limits_dict(ctx.limits),
        "disk": None if store is None else disk_summary(store),
        "catch_up": None if ctx.catch_up is None else ctx.catch_up(),
    }


_HANDLERS: dict[str, Handler] = {
    "get": _get,
    "exists": _exists,
    "put": _put,
    "delete": _delete,
    "incr": _incr,
    "mget": _mget,
    "mput": _mput,
    "mdelete": _mdelete,
    "batch": _batch,
    "scan": _scan,
    "expire": _expire,
    "ttl": _ttl,
    "ping": _ping,
}


def _build_table() -> dict[str, Operation]:
    """Every spec of ``cluster/ops.py`` with its handler; a spec without a handler (or a
    handler without a spec) is a bug caught at import, not a request answered wrongly."""
    if set(_HANDLERS) != set(OPS):
        raise RuntimeError(f"operation handlers {sorted(_HANDLERS)} do not match the specs "
                           f"{sorted(OPS)}")
    return {
        name: Operation(spec, _HANDLERS[name], spec.arg_names, spec.writes,
                        len(spec.key_args) == 1 and spec.key_args[0].name == "key")
        for name, spec in OPS.items()
    }


OPERATIONS: dict[str, Operation] = _build_table()

_EMPTY: Mapping[str, Any] = {}


def lookup(op: object) -> Operation:
    """The Operation named ``op``; ``UNKNOWN_OP`` for anything else (including non-strings)."""
    try:
        return OPERATIONS[op]  # type: ignore[index]
    except (KeyError, TypeError):
        shown = op if isinstance(op, str) else type(op).__name__
        raise UnknownOp(f"unknown op {str(shown)[:64]!r}") from None


async def execute(ctx: NodeContext, operation: Operation, args: object) -> Any:
    """Check ``args`` against ``operation`` and the node's role and ring, then run it.

    Raises the typed errors of ``shardkv.cluster.errors``; anything else escaping is a bug
    the transport turns into ``INTERNAL``.
    """
    if args is None:
        args = _EMPTY
    elif not isinstance(args, dict):
        raise InvalidArgument(f"args must be a map, not {type(args).__name__}")
    if not operation.allowed.issuperset(args):
        extra = sorted(map(str, args.keys() - operation.allowed))
        raise InvalidArgument(f"{operation.name} does not take argument(s) {extra}")
    ring_version = args.get("ring_version")
    if ring_version is not None:
        if isinstance(ring_version, bool) or not isinstance(ring_version, int):
            raise InvalidArgument(f"ring_version must be an integer, got {ring_version!r}")
        if ctx.ring_version is not None and ring_version < ctx.ring_version:
            raise StaleMap(
                f"ring version {ring_version} is older than this node's {ctx.ring_version}",
                ring_version=ctx.ring_version,
            )
    if operation.writes and ctx.role != "primary":
        raise NotPrimary(f"this node is a {ctx.role}; writes go to the primary",
                         primary=ctx.primary)
    _check_keys(ctx.owns_key, operation, args)
    if ctx.write_fence is not None:
        fence = ctx.write_fence
        if fence.enter((as_key(k) for k in operation.spec.keys_of(args)), operation.writes):
            try:
                return await _write(ctx, operation, args)
            finally:
                fence.leave()
    if operation.writes:
        return await _write(ctx, operation, args)
    return await operation.handler(ctx, args)


async def _write(ctx: NodeContext, operation: Operation, args: Args) -> Any:
    WRITE_CONCERN.set(args.get("w") or "majority")
    if ctx.write_timeout_s is None:
        return await operation.handler(ctx, args)
    try:
        async with asyncio.timeout(ctx.write_timeout_s):
            return await operation.handler(ctx, args)
    except TimeoutError:
        raise Timeout(
            f"the write did not reach its write concern within {ctx.write_timeout_s}s "
            "(it was not acknowledged; it may still be applied later)"
        ) from None


def _check_keys(owns_key: Callable[[bytes], None] | None, operation: Operation,
                args: Args) -> None:
    """Every key a request names (the spec says which arguments carry keys) must be a user
    key and, in a cluster, belong to this node's shard. Scans name no key: they are answered
    with what this shard holds and merged by the client."""
    key = args.get("key")
    if key is not None and operation.single_key:
        checked = as_key(key)  # the common single-key case, without building a list
        check_user_key(checked)
        if owns_key is not None:
            owns_key(checked)
        return
    for raw in operation.spec.keys_of(args):
        checked = as_key(raw)
        check_user_key(checked)
        if owns_key is not None:
            owns_key(checked)


def client_error(exc: BaseException, logger: Any) -> ShardKVError:
    """The error a client sees for ``exc``: typed errors as they are; anything else is a bug,
    logged here with its traceback and answered ``INTERNAL`` without the exception's text."""
    if isinstance(exc, ShardKVError):
        return exc
    logger.error("unexpected error serving a request", exc_info=exc)
    return InternalError("internal error; the node logged the details")
