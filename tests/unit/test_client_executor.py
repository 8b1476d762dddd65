"""The executor's decisions against real WebSocket servers speaking the /v1/rpc frames:
redirects are capped at 16 hops, a write whose outcome is unknown is retried only when it is
idempotent, an eventual read falls back from a too-stale replica to the primary, and a write
waiting on a primary that a newer map deposed goes to the new one at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from eventually import eventually
from shardkv.client.executor import Executor
from shardkv.client.retry import NoBackoff, Retry
from shardkv.client.routing import Router
from shardkv.client.write_sessions import WriteSessions
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import NotPrimary, OutcomeUnknown, ShardKVError, TooStale

# A behaviour gets (op, args, how many times this op was seen) and returns the result, raises
# a ShardKVError to answer with it, returns DROP to close the socket without answering, or
# HANG to keep the socket and never answer (a frozen node).
DROP = object()
HANG = object()
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
            if result is HANG:
                continue
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


def one_shard_map(version: int, primary: str, urls: dict[str, str]) -> ClusterMap:
    return ClusterMap.from_dict({
        "version": version,
        "ring": {"version": 1, "hash": "md5", "vnodes": 16, "shards": {"s1": {"weight": 1}}},
        "shards": {"s1": {"epoch": version, "primary": primary, "members": sorted(urls)}},
        "nodes": {node: {"url": url, "shard": "s1",
                         "role": "primary" if node == primary else "replica"}
                  for node, url in urls.items()},
    })


async def test_a_write_held_by_a_deposed_primary_goes_to_the_new_one(serve, session) -> None:
    stamps: list[tuple[bytes, int]] = []

    def frozen(op: str, args: dict, n: int) -> object:
        stamps.append((args["client_id"], args["seq"]))
        return HANG  # SIGSTOPped: the socket stays open, no answer ever comes

    def healthy(op: str, args: dict, n: int) -> object:
        stamps.append((args["client_id"], args["seq"]))
        return {"version": 7}

    old, new = await serve(frozen), await serve(healthy)
    urls = {"n1": old.url, "n2": new.url}
    router = Router(session, ["http://127.0.0.1:1"])
    router.install(one_shard_map(1, "n1", urls))
    executor = Executor(router, session, retry=Retry(NoBackoff(), retries=5),
                        sessions=WriteSessions(prefix=b"t"), timeout=30.0)
    put = asyncio.create_task(executor.call("put", {"key": b"k", "value": b"v"}))
    await eventually(lambda: old.seen["put"] == 1, what="the put to reach the frozen primary")
    assert not put.done()
    # The coordinators fail the shard over; the map watch brings the new map.
    router.install(one_shard_map(2, "n2", urls))
    async with asyncio.timeout(5):  # far below the 30 s budget the put would otherwise wait
        assert await put == {"version": 7}
    assert executor.abandoned == 1
    assert new.seen["put"] == 1
    assert stamps[0] == stamps[1]  # the same session stamp: deduplicated if both applied
    await executor.close()


async def test_a_map_that_keeps_the_primary_abandons_nothing(serve, session) -> None:
    def slow(op: str, args: dict, n: int) -> object:
        return {"version": n}

    server = await serve(slow)
    urls = {"n1": server.url}
    router = Router(session, ["http://127.0.0.1:1"])
    router.install(one_shard_map(1, "n1", urls))
    executor = Executor(router, session, retry=Retry(NoBackoff(), retries=0),
                        sessions=WriteSessions(prefix=b"t"))
    assert await executor.call("put", {"key": b"k", "value": b"v"}) == {"version": 1}
    router.install(one_shard_map(2, "n1", urls))
    assert executor.abandoned == 0
    assert await executor.call("put", {"key": b"k", "value": b"v"}) == {"version": 2}
    await executor.close()
