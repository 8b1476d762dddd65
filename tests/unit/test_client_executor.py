"""The executor's decisions against real WebSocket servers speaking the /v1/rpc frames:
redirects are capped at 16 hops, a write whose outcome is unknown is retried only when it is
idempotent, and an eventual read falls back from a too-stale replica to the primary."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from shardkv.client.executor import Executor
from shardkv.client.retry import NoBackoff, Retry
from shardkv.client.routing import Router
from shardkv.client.write_sessions import WriteSessions
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import NotPrimary, OutcomeUnknown, ShardKVError, TooStale

# A behaviour gets (op, args, how many times this op was seen) and returns the result, raises
# a ShardKVError to answer with it, or returns DROP to close the socket without answering.
DROP = object()
Behaviour = Callable[[str, dict, int], object]


class RpcServer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.seen: Counter[str] = Counter()
        self.url = ""

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            request_id, op, args = wire.unpack(msg.data)
            self.seen[op] += 1
            try:
                result = self.behaviour(op, args, self.seen[op])
            except ShardKVError as exc:
                await ws.send_bytes(wire.pack([request_id, exc.code.value, exc.to_dict()]))
                continue
            if result is DROP:
                await ws.close()
                break
            await ws.send_bytes(wire.pack([request_id, "ok", result]))
        return ws


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Behaviour], object]]:
    runners: list[web.AppRunner] = []

    async def start(behaviour: Behaviour) -> RpcServer:
        server = RpcServer(behaviour)
        app = web.Application()
        app.router.add_get("/v1/rpc", server.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        server.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def direct_executor(session: aiohttp.ClientSession, url: str, **options) -> Executor:
    router = Router(session, nodes=[url])
    return Executor(router, session, retry=Retry(NoBackoff(), retries=5), **options)


async def test_redirects_stop_after_the_hop_cap(serve, session) -> None:
    def always_moved(op: str, args: dict, n: int) -> object:
        raise NotPrimary("not me")

    server = await serve(always_moved)
    executor = direct_executor(session, server.url, max_hops=16)
    with pytest.raises(NotPrimary):
        await executor.call("get", {"key": b"k"}, keys=[b"k"], budget=30.0)
    assert server.seen["get"] == 17  # the first try and 16 hops
    await executor.close()


async def test_a_lost_answer_is_retried_only_for_stamped_writes(serve, session) -> None:
    def drop_first(op: str, args: dict, n: int) -> object:
        if n == 1:
            return DROP
        return {"version": 9, "value": 1}

    server = await serve(drop_first)
    # Writes are non-idempotent by their spec: without a session stamp (sessions off), a
    # write that may have reached the node is reported as possibly applied, never resent.
    executor = direct_executor(session, server.url)
    with pytest.raises(OutcomeUnknown) as caught:
        await executor.call("incr", {"key": b"c"})
    assert caught.value.details["cause"] == "UNAVAILABLE"
    assert server.seen["incr"] == 1
    await executor.close()
    # With a session stamp the node deduplicates, so the executor sends it again, with the
    # same client_id and seq.
    stamped = direct_executor(session, server.url, sessions=WriteSessions(prefix=b"t"))
    assert await stamped.call("put", {"key": b"k", "value": b"v"}) == {"version": 9, "value": 1}
    assert server.seen["put"] == 2
    await stamped.close()


async def test_eventual_reads_fall_back_from_a_stale_replica(serve, session) -> None:
    def stale(op: str, args: dict, n: int) -> object:
        raise TooStale("behind")

    def fresh(op: str, args: dict, n: int) -> object:
        return {"value": b"v", "version": 3, "expires_at": None}

    replica, primary = await serve(stale), await serve(fresh)
    cmap = ClusterMap.from_dict({
        "version": 1,
        "ring": {"version": 1, "hash": "md5", "vnodes": 16, "shards": {"s1": {"weight": 1}}},
        "shards": {"s1": {"epoch": 1, "primary": "n1", "members": ["n1", "n2"]}},
        "nodes": {"n1": {"url": primary.url, "shard": "s1", "role": "primary"},
                  "n2": {"url": replica.url, "shard": "s1", "role": "replica"}},
    })
    router = Router(session, ["http://127.0.0.1:1"])
    router.install(cmap)
    executor = Executor(router, session, retry=Retry(NoBackoff(), retries=0))
    result = await executor.call("get", {"key": b"k", "consistency": "eventual"}, keys=[b"k"],
                                 eventual=True)
    assert result["value"] == b"v"
    assert replica.seen["get"] == 1 and primary.seen["get"] == 1
    assert executor.served_by == Counter({primary.url: 1})
    await executor.close()
