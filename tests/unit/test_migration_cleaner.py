"""The cleaner after a flip: it deletes exactly the keys this shard no longer owns, through
the WAL, and never a reserved row (an exactly-once session record is the node's state: a
cleaner that deleted it had a foreground write bring it back at every pass, forever)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shardkv.node.migration.cleaner import MovedKeyCleaner
from shardkv.node.storage.sessions import SESSION_PREFIX
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.record import Mutation, MutationKind
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    config = StoreConfig(data_dir=tmp_path, engine=request.param,
                         wal=WalOptions(fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0)
    opened = await Store.open(config)
    yield opened
    await opened.close()


async def test_the_cleaner_deletes_unowned_keys_and_keeps_session_rows(store: Store) -> None:
    session_key = SESSION_PREFIX + b"client-1"
    rows = [Mutation(MutationKind.PUT, b"%s:%04d" % (kind, i), b"v")
            for i in range(1500) for kind in (b"keep", b"gone")]
    await store.write_imported([*rows, Mutation(MutationKind.PUT, session_key, b"record")])
    cleaner = MovedKeyCleaner(store, "m1", lambda keys: [k.startswith(b"keep") for k in keys])
    cleaner.start()
    async with asyncio.timeout(30):
        while cleaner.running:
            await asyncio.wait({cleaner._task})  # type: ignore[arg-type]
    status = cleaner.status()
    assert status["done"] and status["error"] is None
    assert status["deleted"] == 1500 and status["passes"] == 2
    page = await store.scan(limit=5000)
    assert [key for key, _ in page.items] == [b"keep:%04d" % i for i in range(1500)]
    view = await store.consistent_view()
    assert session_key in [row[0] async for row in view.rows]
