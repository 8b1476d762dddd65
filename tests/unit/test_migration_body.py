"""A migration route reads its whole body: an import batch of a few thousand records spans
many network chunks, and ``StreamReader.read(n)`` answers only what has arrived (a 4,000-
record batch failed to decode as "incomplete input" before)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from shardkv.cluster import wire
from shardkv.node.migration.service import _read_body


async def test_a_large_body_arriving_in_chunks_is_read_whole() -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await _read_body(request)
        return web.json_response({"records": len(body["records"])})

    app = web.Application()
    app.router.add_post("/import", echo)
    records = [["put", f"k{i:08d}".encode(), b"v" * 100, False, None, i] for i in range(4000)]
    raw = wire.pack({"records": records})

    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 7_000):
            yield raw[start:start + 7_000]

    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        async with session.post(server.make_url("/import"), data=slowly(),
                                headers={"Content-Type": wire.MSGPACK}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["records"] == 4000
