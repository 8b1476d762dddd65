"""TTL semantics against both engines, with a clock the test controls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from shardkv.cluster.errors import NotFound, VersionMismatch
from shardkv.node.storage.store import BatchOp, Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config_for(engine: str, data_dir: Path, **overrides: object) -> StoreConfig:
    base = StoreConfig(
        data_dir=data_dir,
        engine=engine,
        wal=WalOptions(fsync=FsyncPolicy.NEVER),
        ttl_sweep_interval_s=0,
    )
    return replace(base, **overrides)


@pytest.fixture(params=["memory", "sqlite"])
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(engine_name: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await Store.open(config_for(engine_name, tmp_path), clock=clock)
    yield opened
    await opened.close()


async def test_expired_keys_are_invisible_at_once(store: Store, clock: FakeClock) -> None:
    await store.put(b"k", b"v", ttl=10)
    await store.put(b"keep", b"v")
    assert (await store.get(b"k")).expires_at == clock.now + 10
    assert await store.ttl(b"k") == 10
    assert await store.ttl(b"keep") is None
    clock.advance(4)
    assert await store.ttl(b"k") == 6
    clock.advance(6)
    assert await store.get(b"k") is None
    assert await store.exists(b"k") is None
    assert await store.mget([b"k", b"keep"]) == [None, await store.get(b"keep")]
    assert [k for k, _ in (await store.scan()).items] == [b"keep"]
    with pytest.raises(NotFound):
        await store.ttl(b"k")
    with pytest.raises(NotFound):
        await store.ttl(b"never")


async def test_scan_skips_expired_keys_and_still_fills_pages(
    store: Store, clock: FakeClock
) -> None:
    await store.mput([(b"k%02d" % i, b"v") for i in range(0, 20, 2)], ttl=5)
    await store.mput([(b"k%02d" % i, b"v") for i in range(1, 20, 2)])
    clock.advance(5)
    page = await store.scan(limit=4)
    assert [k for k, _ in page.items] == [b"k01", b"k03", b"k05", b"k07"]
    rest = await store.scan(cursor=page.cursor, limit=100)
    assert [k for k, _ in rest.items] == [b"k09", b"k11", b"k13", b"k15", b"k17", b"k19"]
    assert rest.cursor is None


async def test_conditions_treat_expired_keys_as_absent(store: Store, clock: FakeClock) -> None:
    v1 = await store.put(b"k", b"v", ttl=1)
    clock.advance(1)
    with pytest.raises(VersionMismatch) as caught:
        await store.put(b"k", b"w", if_version=v1)
    assert caught.value.details["current_version"] == 0
    v2 = await store.put(b"k", b"w", if_absent=True)
    assert (await store.get(b"k")).value == b"w"
    assert (await store.get(b"k")).expires_at is None
    await store.put(b"gone", b"v", ttl=1)
    clock.advance(1)
    assert (await store.delete(b"gone")).deleted is False
    assert await store.mdelete([b"gone"]) == (0, v2 + 1)
    result = await store.batch([BatchOp("put", b"gone", b"again", if_version=0)])
    assert result.version == v2 + 2


async def test_expire_sets_a_new_ttl_and_version(store: Store, clock: FakeClock) -> None:
    v1 = await store.put(b"k", b"value")
    v2 = await store.expire(b"k", 30)
    assert v2 == v1 + 1
    item = await store.get(b"k")
    assert (item.value, item.version, item.expires_at) == (b"value", v2, clock.now + 30)
    with pytest.raises(NotFound):
        await store.expire(b"absent", 30)
    clock.advance(30)
    with pytest.raises(NotFound):
        await store.expire(b"k", 30)
    assert store.last_lsn == v2


async def test_incr_keeps_ttl_and_restarts_after_expiry(store: Store, clock: FakeClock) -> None:
    await store.put(b"n", b"5", ttl=10)
    assert (await store.incr(b"n", 2))[0] == 7
    assert (await store.get(b"n")).expires_at == clock.now + 10
    clock.advance(10)
    assert (await store.incr(b"n"))[0] == 1
    assert (await store.get(b"n")).expires_at is None


async def test_sweep_deletes_expired_keys_through_the_log(
    engine_name: str, tmp_path: Path, clock: FakeClock
) -> None:
    config = config_for(engine_name, tmp_path, ttl_sweep_batch=3)
    store = await Store.open(config, clock=clock)
    try:
        await store.mput([(b"t%d" % i, b"v") for i in range(7)], ttl=5)
        await store.put(b"t0", b"rewritten without ttl")
        await store.put(b"forever", b"v")
        before = store.last_lsn
        assert await store.sweep_expired() == 0  # nothing due yet
        clock.advance(5)
        swept = 0
        while (n := await store.sweep_expired()) > 0:
            swept += n
        assert swept == 6
        assert store.last_lsn > before
        assert store.stats().expired_swept == 6
        if engine_name == "sqlite":
            await store._engine.flush()
        assert store.key_count == 2
    finally:
        await store.close()
    # The deletes are in the WAL: a reopened store (any clock) does not resurrect them.
    reopened = await Store.open(config, clock=FakeClock(0))
    try:
        assert [k for k, _ in (await reopened.scan()).items] == [b"forever", b"t0"]
    finally:
        await reopened.close()


async def test_background_sweeper_runs_on_its_own(engine_name: str, tmp_path: Path) -> None:
    config = config_for(engine_name, tmp_path, ttl_sweep_interval_s=0.01)
    store = await Store.open(config)
    try:
        await store.mput([(b"a", b"1"), (b"b", b"2")], ttl=0.05)
        deadline = time.monotonic() + 10
        while store.stats().expired_swept < 2:
            assert time.monotonic() < deadline, "the sweeper did not delete expired keys"
            await asyncio.sleep(0.01)
        assert await store.get(b"a") is None
    finally:
        await store.close()


async def test_sweeper_skips_a_key_rewritten_while_pending(store: Store, clock: FakeClock) -> None:
    await store.put(b"k", b"v", ttl=1)
    clock.advance(1)
    due = await store._engine.expired(clock.now, 10)
    assert due == [(b"k", 1)]
    await store.put(b"k", b"fresh")
    assert await store._sweeper.delete_if_still_expired(due, clock.now) == 0
    assert (await store.get(b"k")).value == b"fresh"
