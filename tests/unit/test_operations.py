"""The operation table: argument checking, role and ring checks, and answer shapes, run
against a real Store in a temporary directory (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from shardkv.cluster.errors import (
    ErrorCode,
    InternalError,
    NotPrimary,
    ShardKVError,
    StaleMap,
    Unavailable,
    UnknownOp,
)
from shardkv.cluster.limits import Limits
from shardkv.node.api.node_context import NodeContext
from shardkv.node.api.operations import OPERATIONS, client_error, execute, lookup
from shardkv.node.storage.store import Store
from shardkv.node.storage.store_model import StoreConfig
from shardkv.node.wal.write_ahead_log import WalOptions


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[NodeContext]:
    limits = Limits(max_value_bytes=64)
    store = await Store.open(StoreConfig(data_dir=tmp_path, wal=WalOptions(fsync="never"),
                                         limits=limits))
    try:
        yield NodeContext(limits=limits, store=store)
    finally:
        await store.close()


async def run(ctx: NodeContext, op: str, **args: Any) -> Any:
    return await execute(ctx, lookup(op), args)


async def code_of(ctx: NodeContext, op: str, args: Any) -> ErrorCode:
    with pytest.raises(ShardKVError) as caught:
        await execute(ctx, lookup(op), args)
    return caught.value.code


def test_every_protocol_op_is_in_the_table() -> None:
    assert set(OPERATIONS) == {"get", "exists", "put", "delete", "incr", "mget", "mput",
                               "mdelete", "batch", "scan", "expire", "ttl", "ping"}


@pytest.mark.parametrize("op", ["nope", "", None, 3, b"get"])
def test_unknown_ops(op: object) -> None:
    with pytest.raises(UnknownOp):
        lookup(op)


async def test_answer_shapes(ctx: NodeContext) -> None:
    v1 = (await run(ctx, "put", key=b"a", value=b"1"))["version"]
    assert await run(ctx, "get", key="a") == {"value": b"1", "version": v1, "expires_at": None}
    assert await run(ctx, "exists", key=b"a") == {"exists": True, "version": v1}
    assert await run(ctx, "incr", key=b"n", delta=5) == {"value": 5, "version": v1 + 1}
    mv = (await run(ctx, "mput", items=[[b"b", b"2"], ("c", "3")]))["version"]
    items = (await run(ctx, "mget", keys=[b"b", b"zz"]))["items"]
    assert items == [{"value": b"2", "version": mv, "expires_at": None}, None]
    page = await run(ctx, "scan", prefix=b"", limit=2)
    assert page["items"][0] == [b"a", b"1", v1] and page["cursor"] is not None
    batch = await run(ctx, "batch", ops=[{"op": "put", "key": b"d", "value": b"4"},
                                         {"op": "delete", "key": b"a"}])
    assert batch["version"] > mv and len(batch["results"]) == 2
    assert await run(ctx, "mdelete", keys=[b"b", b"c", b"x"]) == {
        "deleted": 2, "version": batch["version"] + 1}
    ping = await run(ctx, "ping")
    disk = ping.pop("disk")
    assert ping.pop("catch_up") is None  # a replica's catch-up state; None on a primary
    limits = ping.pop("limits")
    assert ping == {"lsn": batch["version"] + 1, "epoch": ctx.store.epoch, "role": "primary"}
    assert limits["max_batch_ops"] == 1000 and limits["max_value_bytes"] > 0
    assert disk["used_bytes"] > 0 and disk["free_bytes"] > 0


@pytest.mark.parametrize(
    ("op", "args", "code"),
    [
        ("get", {"key": b"a", "bogus": 1}, ErrorCode.INVALID_ARGUMENT),
        ("put", {"key": b"a", "value": b"x", "if_version": 1, "if_absent": True},
         ErrorCode.INVALID_ARGUMENT),
        ("put", {"key": b"a", "value": b"x" * 65}, ErrorCode.TOO_LARGE),
        ("mput", {"items": [[b"k", b"x"]] * 1001}, ErrorCode.TOO_LARGE),
        ("mget", {"keys": [b"k"] * 1001}, ErrorCode.TOO_LARGE),
        ("batch", {"ops": [{"op": "put", "key": b"k", "value": b"x", "ttl": -1}]},
         ErrorCode.INVALID_ARGUMENT),
        ("batch", {"ops": [{"op": "delete", "key": b"k", "value": b"x"}]},
         ErrorCode.INVALID_ARGUMENT),
        ("batch", {"ops": ["put"]}, ErrorCode.INVALID_ARGUMENT),
        ("scan", {"limit": True}, ErrorCode.INVALID_ARGUMENT),
        ("scan", {"end": 3}, ErrorCode.INVALID_ARGUMENT),
        ("get", "key", ErrorCode.INVALID_ARGUMENT),
        ("get", {"key": b"a", "min_version": "1"}, ErrorCode.INVALID_ARGUMENT),
        ("get", {"key": b"a", "min_version": 10**9}, ErrorCode.TOO_STALE),
    ],
)
async def test_bad_arguments_write_nothing(
    ctx: NodeContext, op: str, args: Any, code: ErrorCode
) -> None:
    before = ctx.store.last_lsn
    assert await code_of(ctx, op, args) is code
    assert ctx.store.last_lsn == before


async def test_a_replica_refuses_writes_but_serves_reads(ctx: NodeContext) -> None:
    await run(ctx, "put", key=b"a", value=b"1")
    ctx.role = "replica"
    ctx.primary = {"id": "n1", "url": "http://127.0.0.1:1"}
    with pytest.raises(NotPrimary) as caught:
        await run(ctx, "put", key=b"a", value=b"2")
    assert caught.value.details["primary"]["id"] == "n1" and caught.value.retryable
    assert (await run(ctx, "get", key=b"a"))["value"] == b"1"


async def test_a_stale_ring_version_is_refused(ctx: NodeContext) -> None:
    ctx.ring_version = 5
    with pytest.raises(StaleMap) as caught:
        await run(ctx, "get", key=b"a", ring_version=4)
    assert caught.value.details["ring_version"] == 5
    assert (await run(ctx, "exists", key=b"a", ring_version=5))["exists"] is False


async def test_no_store_means_unavailable() -> None:
    ctx = NodeContext()
    with pytest.raises(Unavailable):
        await run(ctx, "get", key=b"a")
    assert (await run(ctx, "ping"))["lsn"] is None


def test_unexpected_exceptions_become_internal_without_their_text() -> None:
    class Log:
        logged: list[BaseException] = []

        def error(self, msg: str, *, exc_info: BaseException) -> None:
            self.logged.append(exc_info)

    log = Log()
    boom = RuntimeError("secret path /etc/x")
    error = client_error(boom, log)
    assert isinstance(error, InternalError) and "secret" not in error.message
    assert log.logged == [boom]
    typed = NotPrimary("elsewhere")
    assert client_error(typed, log) is typed


class RecordingFence:
    """A migration fence that looks at the keys only when ``moving`` (as the real one does
    when it has moving arcs)."""

    def __init__(self, moving: bool) -> None:
        self.moving = moving
        self.seen: list[list[bytes]] = []
        self.left = 0

    def enter(self, keys: Any, writes: bool) -> bool:
        if not self.moving:
            return False
        self.seen.append(list(keys))
        return writes

    def leave(self) -> None:
        self.left += 1


async def test_the_fence_sees_each_requests_keys_and_a_timed_write_its_result(
        ctx: NodeContext) -> None:
    idle, moving = RecordingFence(False), RecordingFence(True)
    ctx.write_timeout_s = 5.0  # a cluster's writes run under the shared deadline timer
    ctx.write_fence = idle
    assert await run(ctx, "put", key=b"a", value=b"1") == {"version": 1}
    ctx.write_fence = moving
    assert await run(ctx, "put", key="b", value=b"2") == {"version": 2}
    await run(ctx, "mget", keys=[b"a", "b"])
    assert moving.seen == [[b"b"], [b"a", b"b"]] and moving.left == 1
    assert ctx.write_deadlines is not None and ctx.write_deadlines.timeout_s == 5.0


async def test_a_stamped_put_is_exactly_once_on_the_fast_path(ctx: NodeContext) -> None:
    """``{key, value, client_id, seq}`` (the client library's put) skips the option checks,
    not the session: a retry answers the first attempt's version and writes nothing."""
    first = await run(ctx, "put", key="k", value=b"a", client_id=b"c1", seq=1)
    retried = await run(ctx, "put", key="k", value=b"a", client_id=b"c1", seq=1)
    assert retried == first
    assert (await run(ctx, "get", key="k"))["version"] == first["version"]
    later = await run(ctx, "put", key="k", value=b"b", client_id=b"c1", seq=2)
    assert later["version"] > first["version"]


@pytest.mark.parametrize("args", [
    {"key": "k", "value": b"v", "client_id": b"", "seq": 1},
    {"key": "k", "value": b"v", "client_id": b"c1", "seq": 0},
    {"key": "k", "value": b"v", "client_id": b"c1", "seq": True},
    {"key": "k", "value": b"v", "seq": 1},
    {"key": "k", "value": b"v" * 65, "client_id": b"c1", "seq": 1},
])
async def test_a_bad_stamped_put_is_refused_on_the_fast_path(ctx: NodeContext,
                                                             args: dict[str, Any]) -> None:
    assert await code_of(ctx, "put", args) in (ErrorCode.INVALID_ARGUMENT, ErrorCode.TOO_LARGE)
    assert await code_of(ctx, "get", {"key": "k"}) is ErrorCode.NOT_FOUND


async def test_a_stamped_put_with_options_still_checks_them(ctx: NodeContext) -> None:
    """An option beside the stamp leaves the fast path: it is checked and applied."""
    assert await code_of(ctx, "put", {"key": "k", "value": b"v", "client_id": b"c1",
                                      "seq": 1, "w": "all"}) is ErrorCode.INVALID_ARGUMENT
    await run(ctx, "put", key="k", value=b"v", client_id=b"c1", seq=2, ttl=60)
    assert 0 < (await run(ctx, "ttl", key="k"))["ttl"] <= 60
