"""Key watch against one real standalone node process: history then live, filters, reserved
keys never shown, JSON frames, bad input, COMPACTED, and SLOW_CONSUMER with the client
library resuming by itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from shardkv.client import Client, Compacted, InvalidArgument, SyncClient, WatchEvent
from shardkv.cluster.wire import pack, unpack

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


async def raw_watch(url: str, request: dict[str, Any], *, text: bool = False
                    ) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{url}/v1/watch", max_msg_size=64 << 20)
    if text:
        await ws.send_str(json.dumps(request))
    else:
        await ws.send_bytes(pack(request))
    return session, ws


async def frames_until(ws: aiohttp.ClientWebSocketResponse, done: Any) -> list[dict]:
    """Frames until ``done(frames)`` holds (or the socket closes), within the deadline."""
    frames: list[dict] = []
    async with asyncio.timeout(DEADLINE_S):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
            else:
                frames.append(unpack(msg.data))
            if done(frames):
                break
    return frames


def events_of(frames: list[dict]) -> list[dict]:
    return [e for f in frames if f["type"] == "events" for e in f["events"]]


async def collect(stream: Any, count: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async with asyncio.timeout(DEADLINE_S):
        async for event in stream:
            out.append(event)
            if len(out) >= count:
                break
    return out


async def test_history_then_live_with_filters_and_no_reserved_keys(node) -> None:
    async with Client(nodes=[node.url]) as kv:  # exactly-once: writes session records too
        v1 = await kv.put("app:a", b"1")
        await kv.put("other:x", b"not watched")
        v2 = await kv.put("app:b", b"2", ttl=3600)
        v3 = (await kv.delete("app:a")).version
        stream = kv.watch(prefix="app:", start_version=0)
        history = await collect(stream, 3)
        assert [(e.type, e.key, e.value, e.version) for e in history] == [
            ("put", b"app:a", b"1", v1), ("put", b"app:b", b"2", v2),
            ("delete", b"app:a", None, v3)]
        assert history[1].expires_at is not None
        v4 = await kv.put("app:c", b"3")
        live = await collect(stream, 1)
        assert (live[0].type, live[0].key, live[0].version) == ("put", b"app:c", v4)
        await stream.aclose()

        keyed = kv.watch("app:c", values=False, start_version=v3)
        got = await collect(keyed, 1)
        assert (got[0].key, got[0].value, got[0].version) == (b"app:c", None, v4)
        await keyed.aclose()

        ranged = kv.watch(start="app:b", end="app:c", start_version=0)
        got = await collect(ranged, 1)
        assert got[0].key == b"app:b"
        await ranged.aclose()

    # The whole key space from version 0, raw: session records (\x00shardkv:session:...)
    # were written with every put above, and none of them may show.
    session, ws = await raw_watch(node.url, {"prefix": b"", "start_version": 0})
    try:
        frames = await frames_until(ws, lambda fs: fs[-1]["type"] == "progress")
        assert frames[0]["type"] == "created"
        keys = [e["key"] for e in events_of(frames)]
        assert keys == [b"app:a", b"other:x", b"app:b", b"app:a", b"app:c"]
        assert not any(k.startswith(b"\x00") for k in keys)
    finally:
        await session.close()


async def test_json_text_frames_for_browsers(node) -> None:
    async with Client(nodes=[node.url]) as kv:
        version = await kv.put("j:1", b"hello")
    session, ws = await raw_watch(node.url, {"key": "j:1", "start_version": 0}, text=True)
    try:
        frames = await frames_until(ws, lambda fs: fs[-1]["type"] == "progress")
        assert events_of(frames) == [{"type": "put", "key": "j:1", "value": "hello",
                                      "version": version, "prev_version": None,
                                      "shard": "default"}]
        assert frames[-1]["version"] >= version
    finally:
        await session.close()


async def test_watches_of_one_prefix_share_frames_in_their_own_format(node) -> None:
    """Six watches of one prefix, msgpack and JSON, with and without values: the node makes
    each entry's frame once per kind (tests/unit/test_watch_shared_frames.py); every watch
    still gets every event, in its own format, and only the values it asked for."""
    kinds = [(False, True), (False, True), (True, True), (True, True), (False, False),
             (True, False)]  # (JSON text?, values?)
    watches = [await raw_watch(node.url, {"prefix": "f:", "values": values}, text=text)
               for text, values in kinds]
    try:
        for _, ws in watches:  # created, then the first progress: live from here
            await frames_until(ws, lambda fs: fs[-1]["type"] == "progress")
        async with Client(nodes=[node.url]) as kv:
            written = [(f"f:{i}", f"v{i}".encode(), await kv.put(f"f:{i}", f"v{i}".encode()))
                       for i in range(20)]
            written.append(("f:bin", b"\xff", await kv.put("f:bin", b"\xff")))
        last = written[-1][2]
        got = [events_of(await frames_until(
            ws, lambda fs: any(f.get("version") == last for f in fs if f["type"] == "events")))
            for _, ws in watches]
    finally:
        for session, _ in watches:
            await session.close()
    for (text, values), events in zip(kinds, got, strict=True):
        assert [e["version"] for e in events] == [v for _, _, v in written]
        keys = [e["key"] for e in events]
        assert keys == [k if text else k.encode() for k, _, _ in written]
        if not values:
            assert all("value" not in e for e in events)
            continue
        expected = [(v.decode() if v != b"\xff" else {"b64": "/w=="}) if text else v
                    for _, v, _ in written]
        assert [e["value"] for e in events] == expected


@pytest.mark.parametrize("request_body", [
    {"start": b"b", "end": b"a"},                       # empty range
    {"prefix": b"p", "start_version": -1},              # negative version
    {"prefix": b"p", "start_version": 10**9},           # a version from the future
    {"prefix": b"p", "progress_interval_ms": 1},        # interval below the minimum
    {"prefix": b"\x00shardkv:session:"},                # reserved keys
    {"key": b"k", "prefix": b"p"},                      # two filters
    {"prefix": b"p", "bogus": 1},                       # unknown option
])
async def test_bad_requests_get_invalid_argument_and_change_nothing(node, request_body) -> None:
    async with Client(nodes=[node.url]) as kv:
        version = await kv.put("keep", b"me")
        session, ws = await raw_watch(node.url, request_body)
        try:
            frames = await frames_until(ws, lambda fs: True)
        finally:
            await session.close()
        assert frames[0]["type"] == "error"
        assert frames[0]["error"] == "INVALID_ARGUMENT"
        assert frames[0]["retryable"] is False
        item = await kv.get("keep")
        assert (item.value, item.version) == (b"me", version)


async def test_client_rejects_bad_watch_before_connecting(node) -> None:
    async with Client(nodes=[node.url]) as kv:
        with pytest.raises(InvalidArgument):
            kv.watch("k", prefix="p")
        with pytest.raises(InvalidArgument):
            kv.watch(prefix="p", start_version=-3)
        with pytest.raises(InvalidArgument):
            await collect(kv.watch(prefix="p", start_version=10**9), 1)


async def test_compacted_history_names_the_oldest_version(node_factory) -> None:
    node = node_factory(env={"SHARDKV_WAL_SEGMENT_BYTES": "4096",
                             "SHARDKV_SNAPSHOT_WAL_BYTES": "65536",
                             "SHARDKV_RETAIN_WAL_ENTRIES": "0"})
    async with Client(nodes=[node.url]) as kv:
        versions = []
        for i in range(400):  # incompressible, so the log grows past the snapshot trigger
            versions.append(await kv.put(f"c:{i:04d}", os.urandom(1024)))
        with pytest.raises(Compacted) as caught:
            await collect(kv.watch(prefix="c:", start_version=0), 1)
        oldest = caught.value.details["compact_version"]
        assert 0 < oldest < versions[-1]
        resumed = await collect(kv.watch(prefix="c:", start_version=oldest),
                                len([v for v in versions if v > oldest]))
        assert [e.version for e in resumed] == [v for v in versions if v > oldest]


async def test_slow_consumer_is_cut_off_and_the_client_resumes_without_gap(node_factory) -> None:
    node = node_factory(env={"SHARDKV_WATCH_BUFFER_BYTES": str(1 << 16)})
    value = b"v" * (16 << 10)
    count = 1000
    async with Client(nodes=[node.url]) as kv:
        session, ws = await raw_watch(node.url, {"prefix": b"s:"})
        stream = kv.watch(prefix="s:", progress=True)
        try:
            created = await frames_until(ws, lambda fs: True)
            assert created[0]["type"] == "created"
            first = await collect(stream, 1)  # the library's watch is live too
            assert first[0].type == "progress"
            # Neither reads while the writes go in: ~16 MiB, far beyond the 64 KiB buffer.
            versions = [await kv.put(f"s:{i:05d}", value) for i in range(count)]
            frames = await frames_until(ws, lambda fs: fs[-1]["type"] == "error")
            assert frames[-1]["error"] == "SLOW_CONSUMER"
            assert frames[-1]["retryable"] is True
            seen: list[int] = []
            async with asyncio.timeout(DEADLINE_S):
                async for event in stream:
                    if event.type == "put":
                        seen.append(event.version)
                    if len(seen) >= count:
                        break
            assert seen == versions  # every write once, in order, across the cut-off
            async with session.get(f"{node.url}/metrics") as response:
                metrics = await response.text()
            cut = [line for line in metrics.splitlines()
                   if line.startswith("shardkv_watch_slow_consumers_total ")]
            assert cut and float(cut[0].split()[1]) >= 2  # the raw watch and the library's
        finally:
            await stream.aclose()
            await session.close()


def test_sync_client_watch_is_a_blocking_iterator(node) -> None:
    with SyncClient(nodes=[node.url]) as kv:
        version = kv.put("sync:1", b"a")
        events = kv.watch(prefix="sync:", start_version=0)
        event = next(events)
        events.close()
        assert (event.type, event.key, event.version) == ("put", b"sync:1", version)


def test_cli_watch_prints_one_json_object_a_line(node) -> None:
    with SyncClient(nodes=[node.url]) as kv:
        v1 = kv.put("cli:a", b"one")
        kv.put("elsewhere", b"x")
        v2 = kv.delete("cli:a").version
    done = subprocess.run(
        [sys.executable, "-m", "shardkv.cluster.cli", "watch", "--node", node.url,
         "--prefix", "cli:", "--from", "0", "--json", "--count", "2"],
        capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines == [
        {"type": "put", "key": "cli:a", "value": "one", "version": v1, "prev_version": None,
         "shard": "default"},
        {"type": "delete", "key": "cli:a", "version": v2, "prev_version": v1,
         "shard": "default"}]
    usage = subprocess.run(
        [sys.executable, "-m", "shardkv.cluster.cli", "watch", "--node", node.url],
        capture_output=True, text=True, timeout=DEADLINE_S)
    assert usage.returncode == 2 and "watch what?" in usage.stderr
