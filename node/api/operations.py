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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shardkv.cluster.errors import (
    InternalError,
    InvalidArgument,
    NotFound,
    NotPrimary,
    ShardKVError,
    StaleMap,
    Timeout,
    Unavailable,
    UnknownOp,
)
from shardkv.cluster.limits import as_key, as_ttl, as_value, limits_dict
from shardkv.cluster.ops import OPS, OpSpec
from shardkv.node.api.arguments import (
    check_read_options,
    check_write_concern,
    key_arg,
    opt_bool,
    opt_version,
    required,
    session_of,
)
from shardkv.node.api.multi_key_operations import batch, mdelete, mget, mput, scan
from shardkv.node.api.node_context import Args, Handler, NodeContext
from shardkv.node.api.write_deadlines import WriteDeadlines
from shardkv.node.storage.commit_pipeline import WRITE_CONCERN
from shardkv.node.storage.disk_report import disk_summary
from shardkv.node.storage.sessions import check_user_key
from shardkv.node.testing import negative_controls


@dataclass(frozen=True, slots=True)
class Operation:
    """One op: its spec (``cluster/ops.py``: arguments, keys, write or not) and its handler.
    ``allowed`` and ``writes`` are copied from the spec for the hot path."""

    spec: OpSpec
    handler: Handler
    allowed: frozenset[str]
    writes: bool
    # The op names exactly one key, in ``key`` (get, put, ...): checked without building a
    # list. Worked out once here, not per request.
    single_key: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------------------------------------
# Single-key handlers: parse everything first, then make exactly one Store call.


async def _get(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = key_arg(args)
    store = ctx.serving_store()
    check_read_options(ctx, store, args)
    item = await store.get(key)
    if item is None:
        raise NotFound("key not found", key=key)
    return {"value": item.value, "version": item.version, "expires_at": item.expires_at}


async def _exists(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = key_arg(args)
    store = ctx.serving_store()
    check_read_options(ctx, store, args)
    item = await store.exists(key)
    return {"exists": item is not None, "version": None if item is None else item.version}


async def _put(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = key_arg(args)
    value = as_value(required(args, "value"), ctx.limits)
    if len(args) == 2:  # a key and a value, the common blind put: no option to check
        return {"version": await ctx.serving_store().put(key, value)}
    if _PUT_OPTIONS.isdisjoint(args):
        # The client library's put in a cluster: stamped for exactly-once (and with the
        # map's ring version, checked by ``execute``), no condition, ttl or write concern to
        # parse (issue 17: the options' checks were about a microsecond per put).
        return {"version": await ctx.serving_store().put(key, value, session=session_of(args))}
    if_version = opt_version(args, "if_version")
    if_absent = opt_bool(args, "if_absent")
    if if_absent and if_version is not None:
        raise InvalidArgument("if_absent and if_version cannot be combined")
    ttl = as_ttl(args.get("ttl"))
    check_write_concern(args)
    version = await ctx.serving_store().put(
        key, value, if_version=if_version, if_absent=if_absent, ttl=ttl, session=session_of(args)
    )
    return {"version": version}


# A put naming none of these has no option to check (``_put``): its other arguments are
# the key, the value, a session stamp and a ring version.
_PUT_OPTIONS = frozenset({"if_version", "if_absent", "ttl", "w"})


async def _delete(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = key_arg(args)
    if_version = opt_version(args, "if_version")
    check_write_concern(args)
    result = await ctx.serving_store().delete(key, if_version=if_version, session=session_of(args))
    return {"deleted": result.deleted, "version": result.version}


async def _incr(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = key_arg(args)
    delta = args.get("delta", 1)
    if isinstance(delta, bool) or not isinstance(delta, int) or not -(2**63) <= delta < 2**63:
        raise InvalidArgument(f"delta must be a 64-bit integer, got {delta!r}")
    check_write_concern(args)
    if negative_controls.ENABLED:  # TEST ONLY (testing/negative_controls.py)
        delta = negative_controls.incr_delta(delta)
    value, version = await ctx.serving_store().incr(key, delta, session=session_of(args))
    return {"value": value, "version": version}


async def _expire(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = key_arg(args)
    ttl = as_ttl(required(args, "ttl"))
    if ttl is None:
        raise InvalidArgument("ttl must be a positive number of seconds")
    check_write_concern(args)
    return {"version": await ctx.serving_store().expire(key, ttl, session=session_of(args))}


async def _ttl(ctx: NodeContext, args: Args) -> dict[str, Any]:
    key = key_arg(args)
    store = ctx.serving_store()
    check_read_options(ctx, store, args)
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
    "mget": mget,
    "mput": mput,
    "mdelete": mdelete,
    "batch": batch,
    "scan": scan,
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
    plain = OPS["put"].arg_names - _PUT_OPTIONS
    if plain != {"key", "value", "client_id", "seq", "ring_version"}:
        raise RuntimeError(f"put takes {sorted(plain)} besides its options: _put's fast "
                           "path would skip checking the new ones")
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


async def execute(ctx: NodeContext, operation: Operation, args: object, *,
                  held: bool = False) -> Any:
    """Check ``args`` against ``operation`` and the node's role and ring, then run it.
    ``held``: the request already waited once for a migration's fence to lift.

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
        if (ctx.ring_version is not None and ring_version > ctx.ring_version
                and ctx.ring_catch_up is not None):
            await ctx.ring_catch_up(ring_version)
    if operation.writes and ctx.role != "primary":
        raise NotPrimary(f"this node is a {ctx.role}; writes go to the primary",
                         primary=ctx.primary)
    _check_keys(ctx.owns_key, operation, args)
    if ctx.write_fence is not None:
        fence = ctx.write_fence
        try:
            counted = fence.enter(_keys(operation, args), operation.writes)
        except Unavailable:
            # A moving key under a migration's fence: wait for the fence to lift (the flip
            # or an abort, a new map), then check everything again under that map.
            if held or not await fence.lifted():
                raise
            return await execute(ctx, operation, args, held=True)
        if counted:
            try:
                return await _write(ctx, operation, args)
            finally:
                fence.leave()
    if operation.writes:
        if ctx.write_timeout_s is None:  # _write's case without a deadline, one frame less
            WRITE_CONCERN.set(args.get("w") or "majority")
            return await operation.handler(ctx, args)
        return await _write(ctx, operation, args)
    return await operation.handler(ctx, args)


def _keys(operation: Operation, args: Args) -> Iterator[bytes]:
    """The request's keys, found only if iterated: a fence with no moving arcs (every
    request but during a migration's flip) never looks."""
    for key in operation.spec.keys_of(args):
        yield as_key(key)


async def _write(ctx: NodeContext, operation: Operation, args: Args) -> Any:
    WRITE_CONCERN.set(args.get("w") or "majority")
    if ctx.write_timeout_s is None:
        return await operation.handler(ctx, args)
    deadlines = ctx.write_deadlines
    if deadlines is None or deadlines.timeout_s != ctx.write_timeout_s:
        deadlines = ctx.write_deadlines = WriteDeadlines(ctx.write_timeout_s,
                                                         asyncio.get_running_loop())
    try:
        return await deadlines.run(operation.handler(ctx, args))
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
