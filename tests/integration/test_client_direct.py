"""The client against one real standalone node process (direct mode): every operation,
typed errors, validation before sending, timeouts, reconnecting across a node restart,
SyncClient from several threads, and update() under contention."""

from __future__ import annotations

import asyncio
import threading

import pytest
from shardkv.client import (
    Client,
    InvalidArgument,
    Item,
    NotFound,
    Retry,
    SyncClient,
    Timeout,
    TooLarge,
    Unavailable,
    VersionMismatch,
    values,
)
from shardkv.client.retry import ConstantBackoff

pytestmark = pytest.mark.integration


async def test_every_operation(node) -> None:
    async with Client(nodes=[node.url]) as kv:
        v1 = await kv.put("user:1", b"alice")
        item = await kv.get("user:1")
        assert item == Item(b"alice", v1, None)
        assert await kv.get("user:missing") is None
        assert await kv.exists("user:1")
        assert not await kv.exists("user:missing")

        # compare-and-swap and create-only
        v2 = await kv.put("user:1", b"bob", if_version=v1)
        assert v2 > v1
        with pytest.raises(VersionMismatch) as caught:
            await kv.put("user:1", b"carol", if_version=v1)
        assert caught.value.details.get("current_version") == v2
        with pytest.raises(VersionMismatch):
            await kv.put("user:1", b"dave", if_absent=True)
        assert (await kv.get("user:1")).value == b"bob"

        # counters
        assert await kv.incr("hits") == 1
        assert await kv.incr("hits", 41) == 42
        assert await kv.incr("hits", -2) == 40

        # str keys and text/JSON helpers
        await kv.put("doc", values.json({"a": [1, 2]}))
        assert (await kv.get("doc")).json() == {"a": [1, 2]}
        await kv.put("greeting", "héllo")
        assert (await kv.get(b"greeting")).text() == "héllo"

        # multi-key, in input order, absent keys as None
        versions = await kv.mput({"m:1": b"one", "m:2": b"two", "m:3": b"three"})
        assert len(versions) == 3
        got = await kv.mget(["m:3", "m:none", "m:1"])
        assert [i.value if i else None for i in got] == [b"three", None, b"one"]
        assert await kv.mdelete(["m:1", "m:2", "m:none"]) == 2

        # scan: prefix, range, limit, key order, across pages
        await kv.mput({f"s:{i:03d}": str(i).encode() for i in range(25)})
        keys = [it.key async for it in kv.scan("s:", page_size=7)]
        assert keys == [f"s:{i:03d}" for i in range(25)]  # text in, text out
        ranged = [it.key async for it in kv.scan(start="s:005", end="s:008")]
        assert ranged == ["s:005", "s:006", "s:007"]
        raw = [it.key async for it in kv.scan(start=b"s:005", end=b"s:007")]
        assert raw == [b"s:005", b"s:006"]  # bytes in, bytes out
        assert len([it async for it in kv.scan("s:", limit=4)]) == 4

        # deletes
        deleted = await kv.delete("user:1")
        assert deleted and deleted.deleted
        assert not await kv.delete("user:1")
        v = await kv.put("cas-del", b"x")
        with pytest.raises(VersionMismatch):
            await kv.delete("cas-del", if_version=v + 1000)
        assert await kv.delete("cas-del", if_version=v)

        # ttl / expire
        await kv.put("temp", b"t", ttl=100)
        left = await kv.ttl("temp")
        assert left is not None and 0 < left <= 100
        await kv.put("forever", b"f")
        assert await kv.ttl("forever") is None
        await kv.expire("forever", 50)
        assert 0 < await kv.ttl("forever") <= 50
        with pytest.raises(NotFound):
            await kv.ttl("nothing-here")

        # batch: all or nothing
        result = await kv.batch([
            {"op": "put", "key": "b:1", "value": b"1"},
            {"op": "put", "key": "b:2", "value": b"2"},
        ])
        assert result["version"] > 0
        with pytest.raises(VersionMismatch):
            await kv.batch([
                {"op": "put", "key": "b:3", "value": b"3"},
                {"op": "delete", "key": "b:1", "if_version": 1},
            ])
        assert await kv.get("b:3") is None  # nothing of the failed batch was written

        ping = await kv.ping(node.url)
        assert ping["role"] == "primary"


async def test_bad_input_is_refused_before_sending(node) -> None:
    async with Client(nodes=[node.url]) as kv:
        with pytest.raises(InvalidArgument):
            await kv.put("", b"x")
        with pytest.raises(InvalidArgument):
            await kv.get(b"k" * 1025)
        with pytest.raises(TooLarge):
            await kv.put("big", b"x" * ((1 << 20) + 1))
        with pytest.raises(InvalidArgument):
            await kv.get("k", consistency="sometimes")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            await kv.incr("k", 1.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            await kv.put("k", b"v", ttl=-1)
        assert await kv.get("big") is None


async def test_a_frozen_node_times_out_within_the_budget(node) -> None:
    async with Client(nodes=[node.url], timeout=120.0) as kv:
        await kv.put("k", b"v")
        node.pause()
        try:
            # The call's own 0.3 s budget must end it: were it ignored, the client's 120 s
            # default would apply and the 30 s deadline here would fail the test instead.
            with pytest.raises(Timeout):
                await asyncio.wait_for(kv.get("k", timeout=0.3), 30)
        finally:
            node.resume()
        assert (await kv.get("k")).value == b"v"


async def test_the_client_reconnects_across_a_node_restart(node) -> None:
    retry = Retry(ConstantBackoff(0.05), retries=200)
    async with Client(nodes=[node.url], retry=retry, timeout=20.0) as kv:
        await kv.put("before", b"1")
        await asyncio.to_thread(node.restart)
        # The old socket is dead; the next call reconnects by itself.
        assert (await kv.get("before")).value == b"1"
        await kv.put("after", b"2")
        assert (await kv.get("after")).value == b"2"


async def test_calls_fail_with_unavailable_when_the_node_is_gone(node) -> None:
    async with Client(nodes=[node.url], retry=Retry(ConstantBackoff(0.01), retries=3)) as kv:
        await kv.put("k", b"v")
        node.kill()
        with pytest.raises(Unavailable):
            await kv.get("k", timeout=2.0)


def test_sync_client_from_several_threads(node) -> None:
    errors: list[BaseException] = []
    with SyncClient(nodes=[node.url]) as kv:

        def worker(t: int) -> None:
            try:
                for i in range(30):
                    key = f"t{t}:{i}"
                    version = kv.put(key, f"{t}-{i}".encode())
                    item = kv.get(key)
                    assert item is not None and item.version == version
                    assert item.value == f"{t}-{i}".encode()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        got = kv.mget([f"t{t}:29" for t in range(8)])
        assert [i.value for i in got] == [f"{t}-29".encode() for t in range(8)]
        assert len(list(kv.scan("t3:"))) == 30
        assert kv.incr("sync-counter", 3) == 3


def test_update_under_contention_loses_no_increment(node) -> None:
    threads, per_thread = 6, 20

    def bump(item: Item | None) -> bytes:
        return str((int(item.value) if item else 0) + 1).encode()

    with SyncClient(nodes=[node.url]) as kv:
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(per_thread):
                    kv.update("contended", bump)
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert errors == []
        assert kv.get("contended").value == str(threads * per_thread).encode()


async def test_update_with_async_tasks_and_delete(node) -> None:
    async with Client(nodes=[node.url]) as kv:

        async def bump(item: Item | None) -> bytes:
            await asyncio.sleep(0)  # yield between read and write: maximal interleaving
            return str((int(item.value) if item else 0) + 1).encode()

        await asyncio.gather(*(kv.update("async-counter", bump) for _ in range(40)))
        assert (await kv.get("async-counter")).value == b"40"
        assert await kv.update("async-counter", lambda item: None) is None
        assert await kv.get("async-counter") is None
