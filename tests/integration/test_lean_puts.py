"""A lean-lane put (``PUT /v1/kv/{key}``) on a real node: answered only once its WAL group
is synced, and, when the node stops, either answered (and then durable) or not taken at all.

The byte-for-byte comparison with aiohttp's answers (tests/integration/test_lean_lane.py)
cannot see when an answer leaves relative to the fsync; these can. They guard any change to
how the lane orders and answers a put (issue 17 tried one without a task per request: a
mutant that answered before the sync failed the first test)."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from raw_http import request

pytestmark = pytest.mark.integration


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer off a raw connection: status, headers (names lowercased), body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def test_a_lane_put_is_answered_only_once_durable(node_factory, http) -> None:
    node = node_factory(fsync="always", env={"SHARDKV_TEST_ADMIN": "1"})

    async def failpoint(action: bytes) -> None:
        async with http.put(f"{node.url}/admin/failpoints/wal_before_sync",
                            data=action) as resp:
            assert resp.status == 200, await resp.text()

    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        await failpoint(b"pause")  # the group is ordered, and held before its write + sync
        try:
            writer.write(request("PUT", "/v1/kv/held", body=b"durable"))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.5)  # not answered while held
            async with http.get(f"{node.url}/v1/kv/held") as resp:
                assert resp.status == 404  # and not visible to a reader either
        finally:
            await failpoint(b"off")
        status, headers, body = await asyncio.wait_for(_answer(reader), 10)
        version = json.loads(body)["version"]
        assert status == 200 and headers["etag"] == f'"{version}"'
        async with http.get(f"{node.url}/v1/kv/held") as resp:
            assert resp.status == 200 and await resp.read() == b"durable"
    finally:
        writer.close()


async def test_sigterm_answers_the_lane_puts_it_took(node_factory, http) -> None:
    node = node_factory(fsync="always")
    count = 48
    connections = [await asyncio.open_connection("127.0.0.1", node.port)
                   for _ in range(count)]
    for i, (_, writer) in enumerate(connections):
        writer.write(request("PUT", f"/v1/kv/stop:{i}", body=b"v%d" % i))
    node.proc.send_signal(signal.SIGTERM)

    async def outcome(reader: asyncio.StreamReader) -> int | None:
        """The version acknowledged, or None: closed without an answer (never taken)."""
        try:
            status, _, body = await _answer(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        assert status == 200, body  # taken means answered, and answered means durable
        assert await reader.read() == b""  # then closed, as the node stops
        return int(json.loads(body)["version"])

    async with asyncio.timeout(30):
        versions = await asyncio.gather(*(outcome(reader) for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    assert await asyncio.to_thread(node.proc.wait, 30) == 0

    await asyncio.to_thread(node.start)
    for i, version in enumerate(versions):
        if version is None:
            continue
        async with http.get(f"{node.url}/v1/kv/stop:{i}") as resp:
            assert resp.status == 200, i
            assert await resp.read() == b"v%d" % i and resp.headers["ETag"] == f'"{version}"'
