"""The delay proxy with real sockets: forwarding, delay, blackhole, cut, drop, partitions."""

from __future__ import annotations

import asyncio
import time

import pytest
from shardkv.chaos.nemesis.delay_proxy import DelayProxy, LinkFaults, ProxyPartitioner
from shardkv.chaos.nemesis.partitions import isolate


@pytest.fixture
async def echo_server():
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[:2]
    server.close()
    await server.wait_closed()


async def roundtrip(address, payload: bytes, limit_s: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), limit_s)
    finally:
        writer.close()


async def test_forwards_bytes_both_ways_in_order(echo_server):
    async with DelayProxy(*echo_server) as proxy:
        payload = bytes(range(256)) * 2000  # 512 KB: several chunks
        assert await roundtrip(proxy.address, payload) == payload
        assert proxy.stats.bytes_forwarded == 2 * len(payload)


async def test_delay_adds_latency_each_way(echo_server):
    async with DelayProxy(*echo_server) as proxy:
        proxy.set_faults(delay_ms=150)
        started = time.monotonic()
        assert await roundtrip(proxy.address, b"ping") == b"ping"
        assert time.monotonic() - started >= 0.3  # 150 ms there and 150 ms back, at least


async def test_blackhole_hangs_and_heal_restores(echo_server):
    async with DelayProxy(*echo_server) as proxy:
        proxy.set_faults(blackhole=True)
        with pytest.raises(TimeoutError):
            await roundtrip(proxy.address, b"lost", limit_s=0.3)
        assert proxy.stats.bytes_discarded >= 4
        proxy.heal()
        assert await roundtrip(proxy.address, b"back") == b"back"


async def test_cut_resets_open_and_new_connections(echo_server):
    async with DelayProxy(*echo_server) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        proxy.set_faults(cut=True)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.address, b"y")
        proxy.heal()
        assert await roundtrip(proxy.address, b"z") == b"z"


async def test_drop_rate_one_resets_on_first_chunk(echo_server):
    async with DelayProxy(*echo_server, seed=1) as proxy:
        proxy.set_faults(drop_rate=1.0)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.address, b"abc")
        assert proxy.stats.resets >= 1


def test_fault_values_are_validated():
    with pytest.raises(ValueError):
        LinkFaults(drop_rate=2.0).validate()
    with pytest.raises(ValueError):
        LinkFaults(delay_ms=-1).validate()


async def test_partitioner_blackholes_exactly_the_grudged_links(echo_server):
    nodes = ["a", "b", "c"]
    links = {(s, d): DelayProxy(*echo_server, name=f"{s}->{d}") for s in nodes for d in nodes
             if s != d}
    for proxy in links.values():
        await proxy.start()
    try:
        partitioner = ProxyPartitioner(links)
        done = await partitioner.start(["a"], grudge=isolate(nodes, ["a"]))
        assert sorted(map(tuple, done["blackholed"])) == [
            ("a", "b"), ("a", "c"), ("b", "a"), ("c", "a")
        ]
        assert await roundtrip(links[("b", "c")].address, b"ok") == b"ok"
        with pytest.raises(TimeoutError):
            await roundtrip(links[("b", "a")].address, b"no", limit_s=0.2)
        await partitioner.stop()
        assert await roundtrip(links[("b", "a")].address, b"yes") == b"yes"
        await partitioner.start(["c"], delay_ms=50)
        assert links[("a", "c")].faults.delay_ms == 50
        assert links[("a", "b")].faults.delay_ms == 0
        await partitioner.heal_all()
        assert all(p.faults == LinkFaults() for p in links.values())
    finally:
        for proxy in links.values():
            await proxy.close()
