"""The commit pipeline's replicated batches (one future per frame) and its barrier, which
waits on futures of its own now that writers' futures are not shielded (issue 17)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shardkv.cluster.errors import OutcomeUnknown
from shardkv.node.storage.commit_pipeline import CommitPipeline
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[tuple[CommitPipeline, list[int]]]:
    """A pipeline over a memory engine, and the LSNs it has applied, in order."""
    wal = await WriteAheadLog.open(tmp_path / "wal", WalOptions(fsync=FsyncPolicy.NEVER))
    pipe = CommitPipeline(wal, MemoryEngine(), epoch=1, clock=lambda: 0.0)
    applied: list[int] = []
    pipe.on_apply = lambda entry: applied.append(entry.lsn)
    try:
        yield pipe, applied
    finally:
        await pipe.close()
        await wal.close()


def put(key: bytes, value: bytes) -> Mutation:
    return Mutation(MutationKind.PUT, key, value)


def entries(first: int, count: int, epoch: int = 1) -> list[WalEntry]:
    return [WalEntry(lsn, epoch, (put(b"k%d" % lsn, b"v%d" % lsn),), 0.0)
            for lsn in range(first, first + count)]


async def test_a_batch_is_ordered_at_once_and_applied_in_order(pipeline) -> None:
    pipe, seen = pipeline
    applied = pipe.submit_entries(entries(1, 5))
    assert pipe.last_lsn == 5 and pipe.pending == 5
    # The overlay has every key of the batch before it is applied.
    assert (await pipe.current(b"k3")).value == b"v3"  # type: ignore[union-attr]
    assert await applied == 5
    assert seen == [1, 2, 3, 4, 5]
    assert await pipe.submit([put(b"x", b"y")]) == 6


async def test_a_batch_that_does_not_follow_is_refused_whole(pipeline) -> None:
    pipe, _ = pipeline
    with pytest.raises(ValueError, match="next lsn"):
        pipe.submit_entries(entries(2, 3))
    batch = entries(1, 3)
    batch[2] = WalEntry(9, 1, (), 0.0)  # a gap inside the batch: the WAL refuses it all
    with pytest.raises(ValueError, match="does not follow"):
        pipe.submit_entries(batch)
    assert pipe.last_lsn == 0 and pipe.pending == 0
    assert await pipe.submit_entries(entries(1, 2)) == 2


async def test_barrier_waits_for_what_was_ordered_before_it(pipeline) -> None:
    pipe, seen = pipeline
    first = pipe.submit([put(b"a", b"1")])
    waiting = asyncio.ensure_future(pipe.barrier())
    second = pipe.submit_entries(entries(2, 3))
    await waiting
    assert seen[:1] == [1]
    assert await first == 1 and await second == 4
    await pipe.barrier()  # nothing in flight: returns at once


async def test_a_cancelled_writer_does_not_cancel_its_write_or_a_barrier(pipeline) -> None:
    pipe, seen = pipeline
    applied = pipe.submit([put(b"a", b"1")])
    barrier = asyncio.ensure_future(pipe.barrier())
    applied.cancel()  # what a writer cancelled while it waits does to its future
    await barrier  # returns although the writer's own wait was cancelled
    assert seen == [1]
    assert (await pipe.current(b"a")).value == b"1"  # type: ignore[union-attr]


async def test_a_failed_pipeline_releases_barriers_and_fails_writers(pipeline) -> None:
    pipe, _ = pipeline

    async def refuse(entry: WalEntry) -> None:
        raise RuntimeError("no majority")

    pipe.gate = refuse
    applied = pipe.submit_entries(entries(1, 3))
    barrier = asyncio.ensure_future(pipe.barrier())
    with pytest.raises(OutcomeUnknown):
        await applied
    await barrier
    assert pipe.failed
