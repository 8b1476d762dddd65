"""The retry matrix: every write op through ``Client`` x every fault a write can meet, with
the number of times the write was applied counted in the shard's log. Always one.

The node here is the real operation layer (``node/api/operations.py``) over a real Store
(memory engine, WAL on disk) behind a WebSocket endpoint speaking the /v1/rpc frames, with a
fault injected on the first attempt of the write under test:

- ``lost_before_send``: the node drops every connection before the write is sent;
- ``lost_in_flight``: the request arrives, the connection breaks before it is executed;
- ``lost_after_apply``: the write is applied, the connection breaks before the answer;
- ``timeout`` / ``outcome_unknown``: applied, then answered TIMEOUT / OUTCOME_UNKNOWN (what
  a node answers when the write may still commit);
- ``not_primary`` / ``stale_map``: not executed, answered with the redirect.

Faults that need real processes (a primary deposed, SIGKILLed) are in
``tests/integration/test_exactly_once_failover.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from shardkv.client import Client, Retry
from shardkv.client.retry import NoBackoff
from shardkv.cluster import wire
from shardkv.cluster.errors import (
    NotPrimary,
    OutcomeUnknown,
    ShardKVError,
    StaleMap,
    Timeout,
)
from shardkv.node.api.node_context import NodeContext
from shardkv.node.api.operations import execute, lookup
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

FAULTS = ("lost_before_send", "lost_in_flight", "lost_after_apply", "timeout",
          "outcome_unknown", "not_primary", "stale_map")


class FaultyNode:
    """A node endpoint that injects ``fault`` into the first request of op ``target``."""

    def __init__(self, store: Store) -> None:
        self.ctx = NodeContext(store=store)
        self.target: str | None = None
        self.fault: str | None = None
        self.attempts = 0
        self.sockets: set[web.WebSocketResponse] = set()
        self.url = ""

    async def arm(self, target: str, fault: str) -> None:
        self.target, self.fault, self.attempts = target, fault, 0
        if fault == "lost_before_send":
            for ws in list(self.sockets):
                await ws.close()

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.BINARY:
                    continue
                if not await self._answer(ws, *wire.unpack(msg.data)):
                    await ws.close()
                    break
        finally:
            self.sockets.discard(ws)
        return ws

    async def _answer(self, ws: web.WebSocketResponse, rid: int, op: str, args: Any) -> bool:
        fault = None
        if op == self.target:
            self.attempts += 1
            if self.attempts == 1:
                fault = self.fault
        if fault == "lost_in_flight":
            return False
        if fault in ("not_primary", "stale_map"):
            error = NotPrimary("not me") if fault == "not_primary" else StaleMap("moved")
            await ws.send_bytes(wire.pack([rid, error.code.value, error.to_dict()]))
            return True
        try:
            result = await execute(self.ctx, lookup(op), args)
        except ShardKVError as exc:
            await ws.send_bytes(wire.pack([rid, exc.code.value, exc.to_dict()]))
            return True
        if fault == "lost_after_apply":
            return False
        if fault in ("timeout", "outcome_unknown"):
            error = Timeout("slow") if fault == "timeout" else OutcomeUnknown("deposed")
            await ws.send_bytes(wire.pack([rid, error.code.value, error.to_dict()]))
            return True
        await ws.send_bytes(wire.pack([rid, "ok", result]))
        return True


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FaultyNode]:
    store = await Store.open(StoreConfig(data_dir=tmp_path, wal=WalOptions(
        fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0))
    faulty = FaultyNode(store)
    app = web.Application()
    app.router.add_get("/v1/rpc", faulty.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    faulty.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield faulty
    await runner.cleanup()
    await store.close()


def applications(store: Store, key: bytes) -> int:
    """How many log entries wrote ``key``: how many times a write to it was applied."""
    return sum(1 for e in store.wal.read_from(1) if any(m.key == key for m in e.mutations))


Call = Callable[[Client], Awaitable[Any]]

# op -> (spec op name, setup, the write, the answer it must give)
WRITES: dict[str, tuple[str, Call | None, Call, Any]] = {
    "put": ("put", None, lambda kv: kv.put("k", b"v"), 2),
    "cas": ("put", lambda kv: kv.put("k", b"old"),
            lambda kv: kv.put("k", b"new", if_version=2), 3),
    "if_absent": ("put", None, lambda kv: kv.put("k", b"v", if_absent=True), 2),
    "delete": ("delete", lambda kv: kv.put("k", b"v"), lambda kv: kv.delete("k"), (True, 3)),
    "delete_cas": ("delete", lambda kv: kv.put("k", b"v"),
                   lambda kv: kv.delete("k", if_version=2), (True, 3)),
    "incr": ("incr", lambda kv: kv.put("k", b"41"), lambda kv: kv.incr("k"), 42),
    "expire": ("expire", lambda kv: kv.put("k", b"v"), lambda kv: kv.expire("k", 60), 3),
    "mput": ("mput", None, lambda kv: kv.mput({"k": b"1", "k2": b"2"}), [2, 2]),
    "mdelete": ("mdelete", lambda kv: kv.mput({"k": b"1", "k2": b"2"}),
                lambda kv: kv.mdelete(["k", "k2"]), 2),
    "batch": ("batch", lambda kv: kv.put("k", b"v"),
              lambda kv: kv.batch([{"op": "put", "key": "k", "value": b"w", "if_version": 2},
                                   {"op": "delete", "key": "k2"}]),
              {"version": 3, "results": [{"op": "put", "key": b"k", "version": 3},
                                         {"op": "delete", "key": b"k2", "deleted": False}]}),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("write", sorted(WRITES))
async def test_every_write_is_applied_once_whatever_fails(
    node: FaultyNode, write: str, fault: str
) -> None:
    op, setup, call, expected = WRITES[write]
    async with Client(nodes=[node.url], retry=Retry(NoBackoff(), retries=8),
                      timeout=30.0) as kv:
        await kv.put("warm-up", b"x")  # version 1; opens the connection
        if setup is not None:
            await setup(kv)
        before = applications(node.ctx.store, b"k")
        await node.arm(op, fault)
        answer = await call(kv)
    if write.startswith("delete"):
        answer = (answer.deleted, answer.version)
    assert answer == expected
    assert applications(node.ctx.store, b"k") == before + 1
    assert node.attempts >= (1 if fault == "lost_before_send" else 2)


async def test_without_sessions_a_lost_answer_is_reported_as_maybe_applied(
    node: FaultyNode,
) -> None:
    """The baseline the sessions fix: with stamping off, a write whose answer was lost is not
    resent (it could apply twice) and the error says it may have happened."""
    async with Client(nodes=[node.url], retry=Retry(NoBackoff(), retries=8), timeout=30.0,
                      exactly_once=False) as kv:
        await kv.put("c", b"1")
        await node.arm("incr", "lost_after_apply")
        with pytest.raises(OutcomeUnknown, match="may have happened"):
            await kv.incr("c")
    assert node.attempts == 1
    assert (await node.ctx.store.get(b"c")).value == b"2"


async def test_giving_up_after_a_maybe_applied_attempt_says_so(node: FaultyNode) -> None:
    """Out of retries after an OUTCOME_UNKNOWN: the error is OutcomeUnknown, not the last
    transient error."""
    async with Client(nodes=[node.url], retry=Retry(NoBackoff(), retries=0),
                      timeout=30.0) as kv:
        await kv.put("c", b"1")
        await node.arm("incr", "timeout")
        with pytest.raises(OutcomeUnknown) as caught:
            await kv.incr("c")
    assert caught.value.details["cause"] == "TIMEOUT"
