"""A compare-and-swap's condition read, when the engine suspends mid-read (as a disk read
would): a write ordered or applied meanwhile must still be seen. Split from test_store.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shardkv.node.storage.commit_pipeline import CommitPipeline
from shardkv.node.storage.engines.engine import StoredItem
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.wal.record import Mutation, MutationKind
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog


class SuspendingEngine(MemoryEngine):
    """A memory engine whose reads suspend until released, like a disk read would, so a
    test can act in the middle of a read."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.reads = 0

    async def get(self, key: bytes) -> StoredItem | None:
        self.reads += 1
        item = await super().get(key)
        self.reading.set()
        await self.release.wait()
        return item


@pytest.fixture
async def slow_pipeline(tmp_path: Path) -> AsyncIterator[tuple[CommitPipeline, SuspendingEngine]]:
    wal = await WriteAheadLog.open(tmp_path / "wal", WalOptions(fsync=FsyncPolicy.NEVER))
    engine = SuspendingEngine()
    pipeline = CommitPipeline(wal, engine, epoch=1, clock=lambda: 0.0)
    yield pipeline, engine
    await pipeline.close()
    await wal.close()


def put_mutation_of(key: bytes, value: bytes) -> Mutation:
    return Mutation(MutationKind.PUT, key, value)


async def test_condition_read_sees_a_write_ordered_during_the_read(slow_pipeline) -> None:
    pipeline, engine = slow_pipeline
    engine.release.set()
    await pipeline.submit([put_mutation_of(b"k", b"v1")])
    engine.release.clear()
    reading = asyncio.create_task(pipeline.current(b"k"))
    await engine.reading.wait()
    pending = pipeline.submit([put_mutation_of(b"k", b"v2")])  # ordered mid-read
    engine.release.set()
    assert (await reading).value == b"v2"
    assert await pending == 2


async def test_condition_read_sees_a_write_applied_during_it(slow_pipeline) -> None:
    pipeline, engine = slow_pipeline
    engine.release.set()
    await pipeline.submit([put_mutation_of(b"k", b"v1")])
    engine.release.clear()
    reading = asyncio.create_task(pipeline.current(b"k"))
    await engine.reading.wait()
    # Ordered *and applied* while the read is suspended: the overlay keeps it until the read
    # is over (it would otherwise have left at the apply), so the read answers it, once.
    await pipeline.submit([put_mutation_of(b"k", b"v2")])
    engine.release.set()
    assert (await reading).value == b"v2"
    assert engine.reads == 1
