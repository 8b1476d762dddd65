"""Routing from an in-memory map: key -> shard with the shared ring, primary vs replicas,
map versions only moving forward, and multi-key splitting in input order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from shardkv.client.executor import Executor, Regroup
from shardkv.client.multi_key import MultiKeyError, Part, group_by_shard, part_keys, run_split
from shardkv.client.routing import DIRECT_SHARD, Router
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import TooLarge, Unavailable, VersionMismatch
from shardkv.cluster.ring import shard_for_key


def make_map(version: int = 5, *, shards: int = 2, ring_version: int = 1) -> ClusterMap:
    raw_shards = {}
    nodes = {}
    for s in range(1, shards + 1):
        members = [f"n{s}{m}" for m in range(1, 4)]
        raw_shards[f"s{s}"] = {"epoch": 1, "primary": members[0], "members": members}
        for m, node in enumerate(members):
            nodes[node] = {
                "url": f"http://127.0.0.1:{7000 + 10 * s + m}",
                "status": "up",
                "shard": f"s{s}",
                "role": "primary" if m == 0 else "replica",
            }
    return ClusterMap.from_dict(
        {
            "version": version,
            "ring": {
                "version": ring_version,
                "hash": "md5",
                "vnodes": 160,
                "shards": {f"s{s}": {"weight": 1} for s in range(1, shards + 1)},
            },
            "shards": raw_shards,
            "nodes": nodes,
        }
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def router_with(session: aiohttp.ClientSession, cmap: ClusterMap) -> Router:
    router = Router(session, ["http://127.0.0.1:1"])
    assert router.install(cmap)
    return router


async def test_routes_are_worked_out_again_for_each_new_map(
    session: aiohttp.ClientSession,
) -> None:
    """The key -> shard function and the primaries' routes are cached per map: a newer map
    (another primary, another ring) is followed at once, and so is a map put in place by
    other means than ``install``."""
    router = router_with(session, make_map(version=5))
    before = router.primary("s1")
    assert router.primary("s1") is before  # cached: no new Route per request
    moved = make_map(version=6, ring_version=2)
    moved.shards["s1"].primary = "n12"
    assert router.install(moved)
    after = router.primary("s1")
    assert after.url == moved.primary_of("s1").url != before.url
    assert after.ring_version == 2
    three = make_map(version=7, shards=3, ring_version=3)
    router._map = three  # as a test of a stale client does
    keys = [f"k{i}".encode() for i in range(300)]
    assert [router.shard_of(k) for k in keys] == [shard_for_key(three, k) for k in keys]
    assert router.primary("s3").ring_version == 3


async def test_keys_route_with_the_shared_ring(session: aiohttp.ClientSession) -> None:
    cmap = make_map()
    router = router_with(session, cmap)
    owners = set()
    for i in range(200):
        key = f"user:{i}".encode()
        shard = router.shard_of(key)
        assert shard == shard_for_key(cmap, key)
        owners.add(shard)
        route = router.primary(shard)
        assert route.is_primary
        assert route.url == cmap.primary_of(shard).url
        assert route.ring_version == 1
    assert owners == {"s1", "s2"}  # 200 keys land on both shards


async def test_eventual_reads_rotate_over_replicas_then_fall_back_to_primary(
    session: aiohttp.ClientSession,
) -> None:
    cmap = make_map()
    router = router_with(session, cmap)
    firsts = set()
    for _ in range(10):
        candidates = router.read_candidates("s1")
        assert [c.is_primary for c in candidates] == [False, False, True]
        assert candidates[-1].url == cmap.nodes["n11"].url
        firsts.add(candidates[0].url)
    assert firsts == {cmap.nodes["n12"].url, cmap.nodes["n13"].url}


async def test_a_replica_marked_down_is_not_read(session: aiohttp.ClientSession) -> None:
    cmap = make_map()
    cmap.nodes["n12"].status = "down"
    router = router_with(session, cmap)
    urls = [c.url for c in router.read_candidates("s1")]
    assert urls == [cmap.nodes["n13"].url, cmap.nodes["n11"].url]


async def test_maps_only_move_forward(session: aiohttp.ClientSession) -> None:
    router = router_with(session, make_map(version=5))
    assert not router.install(make_map(version=4))
    assert not router.install(make_map(version=5))
    assert router.install(make_map(version=6))
    assert router.version == 6


async def test_wait_newer_wakes_on_adoption(session: aiohttp.ClientSession) -> None:
    router = router_with(session, make_map(version=5))
    waiter = asyncio.create_task(router.wait_newer(5, within=5.0))
    await asyncio.sleep(0)
    await router._adopt(make_map(version=7))
    assert await waiter
    assert not await router.wait_newer(7, within=0.01)


async def test_a_shard_without_primary_is_unavailable(session: aiohttp.ClientSession) -> None:
    cmap = make_map()
    cmap.shards["s2"].primary = None
    router = router_with(session, cmap)
    with pytest.raises(Unavailable, match="no primary"):
        router.primary("s2")


async def test_direct_mode_routes_everything_to_the_node(session: aiohttp.ClientSession) -> None:
    router = Router(session, nodes=["http://127.0.0.1:9/"])
    assert router.shard_of(b"anything") == DIRECT_SHARD
    assert router.primary(DIRECT_SHARD).url == "http://127.0.0.1:9"
    assert router.ring_version() is None
    assert [r.url for r in router.read_candidates(DIRECT_SHARD)] == ["http://127.0.0.1:9"]
    with pytest.raises(ValueError):
        Router(session, ["http://c"], nodes=["http://n"])


async def test_run_split_answers_in_input_order_and_runs_parts_concurrently(
    session: aiohttp.ClientSession,
) -> None:
    router = router_with(session, make_map())
    keys = [f"k{i}".encode() for i in range(100)]
    running = 0
    peak = 0

    async def part(indexes: list[int]) -> list[bytes]:
        nonlocal running, peak
        owners = {router.shard_of(keys[i]) for i in indexes}
        assert len(owners) == 1  # a part never spans shards
        assert indexes == sorted(indexes)  # and keeps input order
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return [keys[i].upper() for i in indexes]

    results = await run_split(router, keys, part)
    assert results == [k.upper() for k in keys]
    assert peak == 2  # both shards in flight at once


async def test_run_split_reports_partial_failures_per_key(
    session: aiohttp.ClientSession,
) -> None:
    router = router_with(session, make_map())
    keys = [f"k{i}".encode() for i in range(40)]
    groups = group_by_shard(router, keys, list(range(len(keys))))
    failing = group_by_shard(router, keys, [0])
    bad_shard = next(iter(failing))

    async def part(indexes: list[int]) -> list[int]:
        if router.shard_of(keys[indexes[0]]) == bad_shard:
            raise VersionMismatch("nope", current_version=3)
        return indexes

    with pytest.raises(MultiKeyError) as caught:
        await run_split(router, keys, part)
    error = caught.value
    assert error.code.value == "VERSION_MISMATCH"
    assert not error.retryable
    assert set(error.errors) == set(groups[bad_shard])
    for i, value in enumerate(error.results):
        assert value == (None if i in error.errors else i)
    assert set(error.errors_by_key()) == {keys[i] for i in groups[bad_shard]}


async def test_run_split_regroups_after_a_ring_change(session: aiohttp.ClientSession) -> None:
    router = router_with(session, make_map(shards=2))
    keys = [f"k{i}".encode() for i in range(60)]
    calls = 0

    async def part(indexes: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if router.version == 5:
            # The first round learns the ring changed: three shards now own the keys.
            router.install(make_map(version=6, shards=3, ring_version=2))
            raise Regroup()
        return [router.shard_of(keys[i]) for i in indexes]

    results = await run_split(router, keys, part)
    assert results == [router.shard_of(k) for k in keys]
    assert set(results) == {"s1", "s2", "s3"}
    assert calls >= 4  # one failed round (1-2 parts) then three parts on the new ring


async def test_run_split_halves_a_part_whose_answer_is_over_the_cap(
    session: aiohttp.ClientSession,
) -> None:
    """An mget of large values: the node refuses an answer over its byte cap (TOO_LARGE,
    nothing done); the client asks again in halves until each answer fits."""
    router = router_with(session, make_map())
    keys = [f"k{i}".encode() for i in range(40)]
    value_bytes = 1_000
    answer_cap = 4_500  # at most 4 values per answer
    asked: list[int] = []

    async def part(indexes: list[int]) -> list[bytes]:
        asked.append(len(indexes))
        if len(indexes) * value_bytes > answer_cap:
            raise TooLarge("answer over the cap", max_answer_bytes=answer_cap)
        return [keys[i] * 2 for i in indexes]

    results = await run_split(router, keys, part)
    assert results == [k * 2 for k in keys]
    assert max(asked) > 4 and min(asked) <= 4  # it asked big first, then split


async def test_run_split_gives_up_on_a_single_key_over_the_cap(
    session: aiohttp.ClientSession,
) -> None:
    router = router_with(session, make_map())
    keys = [b"huge", b"small"]

    async def part(indexes: list[int]) -> list[bytes]:
        if any(keys[i] == b"huge" for i in indexes):
            raise TooLarge("answer over the cap")
        return [keys[i] for i in indexes]

    with pytest.raises(MultiKeyError) as caught:
        await run_split(router, keys, part)
    assert set(caught.value.errors) == {0}
    assert caught.value.results[1] == b"small"


async def test_split_parts_are_not_hashed_again_while_the_map_is_the_same(
    session: aiohttp.ClientSession,
) -> None:
    """A multi-key call hashes each key once (grouping); the executor trusts the group's shard
    while the map is the version that grouped it, and hashes again (so regroups) after."""
    router = router_with(session, make_map(shards=2))
    executor = Executor(router, session)
    keys = [f"k{i}".encode() for i in range(60)]
    hashed = 0
    shard_of = router.shard_of

    def counting(key: bytes) -> str:
        nonlocal hashed
        hashed += 1
        return shard_of(key)

    router.shard_of = counting  # type: ignore[method-assign]
    parts: list[Part] = []

    async def part(indexes: Part) -> list[str]:
        parts.append(indexes)
        return [executor._target_shard(part_keys(keys, indexes), None)] * len(indexes)

    results = await run_split(router, keys, part)
    assert hashed == len(keys)  # once each, by the grouping
    assert results == [shard_of(k) for k in keys]
    router.install(make_map(version=6, shards=3, ring_version=2))
    spanning = next(p for p in parts if len({shard_of(keys[i]) for i in p}) > 1)
    with pytest.raises(Regroup):
        executor._target_shard(part_keys(keys, spanning), None)
