"""The client with no coordinator answering (issue 19): it keeps routing with its cached map,
and a refresh asked for right after a failed fetch fails at once instead of waiting on
unreachable coordinators again. The coordinator URL is a closed local port (refused at once)."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from shardkv.client.coordinator_quorum import CoordinatorQuorum, probe_quorum
from shardkv.client.routing import Router
from shardkv.cluster.errors import Unavailable
from test_client_routing import make_map


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_a_failed_fetch_keeps_the_cached_map_and_the_next_refresh_fails_fast() -> None:
    async with aiohttp.ClientSession() as session:
        router = Router(session, [closed_port_url()], fetch_timeout=0.5)
        cached = make_map(7)
        router.install(cached)
        assert router.coordinators_reachable
        with pytest.raises(Unavailable, match="no coordinator answered"):
            await router.refresh()
        assert not router.coordinators_reachable and router.map_fetch_failures == 1
        with pytest.raises(Unavailable, match="cached map") as fast:
            await router.refresh()
        assert fast.value.details["cached_map_version"] == 7
        assert router.map_fetch_failures == 1  # no second fetch was made
        assert router.map is cached
        assert router.primary("s1").url == cached.node_url(cached.shards["s1"].primary or "")


async def test_without_a_cached_map_every_refresh_tries_the_coordinators() -> None:
    async with aiohttp.ClientSession() as session:
        router = Router(session, [closed_port_url()], fetch_timeout=0.5)
        for _ in range(2):
            with pytest.raises(Unavailable, match="no coordinator answered"):
                await router.refresh()
        assert router.map_fetch_failures == 2


async def test_status_line_names_the_missing_quorum_and_what_still_works() -> None:
    quorum = await probe_quorum([closed_port_url(), closed_port_url()], within=0.5)
    assert quorum == CoordinatorQuorum(0, 2, False, None)
    line = quorum.line()
    assert line.startswith("coordinators: no quorum (0 of 2 answer)")
    assert "failover" in line and "cached map" in line
    assert CoordinatorQuorum(3, 3, True, "c1").line() == (
        "coordinators: quorum (3 of 3 answer, leader c1)")
