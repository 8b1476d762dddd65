"""One watcher process of the watch fan-out benchmark: K watch streams of one prefix, on
shardkv's ``/v1/watch`` WebSocket or etcd's gateway ``/v3/watch``, timing every event.

Why a process of its own: at 1,000 watchers a single Python process decoding every frame is
slower than either server, so the benchmark measured itself. The parent forks several of
these, each holding a share of the watches, and they report receive times back.

Times are ``time.monotonic()``: CLOCK_MONOTONIC on Linux, one clock for the whole machine,
so a receive time here is comparable with the writer's acknowledgement time in the parent.

Protocol on the pipe: the child sends ``("ready",)`` once all its watches are created, then
``("done", report)`` when it has every expected event, or when the parent writes anything
to the pipe (a stop: the run's deadline passed), or ``("failed", text)``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from array import array
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

PREFIX = b"watch-bench/"


class Arrivals:
    """Which write each event carried and when it arrived, in two flat arrays (cheap to
    pickle back to the parent even at 1,000 watchers)."""

    def __init__(self, expected: int) -> None:
        self.index = array("l")
        self.at = array("d")
        self.remaining = expected
        self.complete = asyncio.Event()

    def saw(self, write_index: int, at: float) -> None:
        self.index.append(write_index)
        self.at.append(at)
        self.remaining -= 1
        if self.remaining <= 0:
            self.complete.set()


Watcher = Callable[[aiohttp.ClientSession, Arrivals, Callable[[], None]], Awaitable[None]]


async def shardkv_watch(url: str, session: aiohttp.ClientSession, arrivals: Arrivals,
                        created: Callable[[], None]) -> None:
    """One ``/v1/watch`` WebSocket of the prefix, binary msgpack frames."""
    from shardkv.cluster.wire import pack, unpack

    async with session.ws_connect(f"{url}/v1/watch", max_msg_size=64 << 20) as ws:
        await ws.send_bytes(pack({"prefix": PREFIX}))
        async for msg in ws:
            now = time.monotonic()
            frame = unpack(msg.data)
            if frame["type"] == "created":
                created()
            elif frame["type"] == "events":
                for event in frame["events"]:
                    arrivals.saw(int(event["value"]), now)
            elif frame["type"] == "error":
                raise RuntimeError(f"watch failed: {frame}")
    raise RuntimeError("the watch stream closed")


async def etcd_watch(url: str, session: aiohttp.ClientSession, arrivals: Arrivals,
                     created: Callable[[], None]) -> None:
    """One streaming POST to etcd's gateway ``/v3/watch`` (newline-less JSON messages)."""
    end = PREFIX[:-1] + bytes([PREFIX[-1] + 1])
    body = {"create_request": {"key": base64.b64encode(PREFIX).decode(),
                               "range_end": base64.b64encode(end).decode()}}
    decoder = json.JSONDecoder()
    async with session.post(f"{url}/v3/watch", json=body,
                            timeout=aiohttp.ClientTimeout(total=None)) as response:
        buffer = ""
        async for chunk in response.content.iter_any():
            now = time.monotonic()
            buffer += chunk.decode()
            while buffer:
                buffer = buffer.lstrip()
                try:
                    message, used = decoder.raw_decode(buffer)
                except ValueError:
                    break
                buffer = buffer[used:]
                result = message.get("result", {})
                if result.get("created"):
                    created()
                for event in result.get("events", []):
                    arrivals.saw(int(base64.b64decode(event["kv"]["value"])), now)
    raise RuntimeError("the watch stream closed")


def watcher_process(system: str, url: str, watches: int, writes: int, conn: Connection) -> None:
    """Entry point of a forked watcher process (see the module's protocol)."""
    try:
        report = asyncio.run(_watch(system, url, watches, writes, conn))
        conn.send(("done", report))
    except BaseException as exc:  # the parent must hear about any failure
        conn.send(("failed", repr(exc)))
    finally:
        conn.close()


async def _watch(system: str, url: str, watches: int, writes: int,
                 conn: Connection) -> dict[str, Any]:
    one = shardkv_watch if system == "shardkv" else etcd_watch
    arrivals = Arrivals(watches * writes)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    pending_creates = watches
    cpu_at_ready = 0.0

    def on_parent() -> None:  # anything from the parent (or its end closing) means stop
        loop.remove_reader(conn.fileno())
        stop.set()

    def created() -> None:
        nonlocal pending_creates, cpu_at_ready
        pending_creates -= 1
        if pending_creates == 0:
            cpu_at_ready = time.process_time()
            conn.send(("ready",))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.ensure_future(one(url, session, arrivals, created))
                 for _ in range(watches)]
        loop.add_reader(conn.fileno(), on_parent)
        waiters = [asyncio.ensure_future(arrivals.complete.wait()),
                   asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait([*tasks, *waiters], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()  # raises the watcher's failure
        finally:
            if not stop.is_set():
                loop.remove_reader(conn.fileno())
            for task in [*tasks, *waiters]:
                task.cancel()
            await asyncio.gather(*tasks, *waiters, return_exceptions=True)
    return {"index": arrivals.index, "at": arrivals.at,
            "cpu_s": time.process_time() - cpu_at_ready, "watches": watches}
