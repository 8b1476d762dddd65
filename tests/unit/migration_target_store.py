"""A migration target's store for importer tests: opened on either engine with its LSN floor
raised above every version the tests import (what a real target does first)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


@asynccontextmanager
async def target_store(engine: str, data_dir: Path, floor: int) -> AsyncIterator[Store]:
    config = StoreConfig(data_dir=data_dir, engine=engine,
                         wal=WalOptions(fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0)
    opened = await Store.open(config)
    try:
        await opened.jump_lsn(floor)  # the target's floor: above every imported version
        yield opened
    finally:
        await opened.close()
