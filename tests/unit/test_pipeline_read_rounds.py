"""A write's read of the state it replaces takes one engine read, whatever is applied
meanwhile (issue 12's latency hazard: on SQLite the read used to start over after every
apply, and under write load it could start over again and again).

The guarantee kept: the answer is each key's newest state in write order at the moment the
read returns (so a compare-and-swap, an exactly-once record and a put's ``prev_version`` are
decided on the truth), and nothing is left in the overlay once the reads are over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardkv.cluster.errors import VersionMismatch
from shardkv.node.storage.commit_pipeline import CommitPipeline
from shardkv.node.storage.engines.engine import StoredItem
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.storage.engines.sqlite import SqliteEngine
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog

Between = Callable[[], Awaitable[None]]


class InterruptedSqlite(SqliteEngine):
    """The real SQLite engine, with a hook run after each read has taken its answer and
    before it returns: what the applier may do while aiosqlite's thread answers."""

    reads = 0
    between: Between | None = None

    async def _after_read(self) -> None:
        self.reads += 1
        if self.between is not None:
            await self.between()

    async def get(self, key: bytes) -> StoredItem | None:
        item = await super().get(key)
        await self._after_read()
        return item

    async def get_many(self, keys: Sequence[bytes]) -> list[StoredItem | None]:
        items = await super().get_many(keys)
        await self._after_read()
        return items


@pytest.fixture
async def sqlite_pipeline(tmp_path: Path
                          ) -> AsyncIterator[tuple[CommitPipeline, InterruptedSqlite]]:
    wal = await WriteAheadLog.open(tmp_path / "wal", WalOptions(fsync=FsyncPolicy.NEVER))
    engine = await InterruptedSqlite.open(tmp_path / "sqlite", flush_interval_s=3600)
    pipeline = CommitPipeline(wal, engine, epoch=1, clock=lambda: 0.0)
    yield pipeline, engine
    await pipeline.close()
    await engine.close()
    await wal.close()


def put(key: bytes, value: bytes) -> Mutation:
    return Mutation(MutationKind.PUT, key, value)


def delete(key: bytes) -> Mutation:
    return Mutation(MutationKind.DELETE, key)


def applies_during_reads(pipeline: CommitPipeline, engine: InterruptedSqlite, reads: int,
                         mutations: Callable[[int], list[Mutation]]) -> list[int]:
    """Make each of the first ``reads`` engine reads see entries ordered *and applied*
    before it returns (the case that used to start the read over); returns their LSNs."""
    lsns: list[int] = []

    async def between() -> None:
        if len(lsns) < reads:
            lsns.append(await pipeline.submit(mutations(len(lsns))))

    engine.between = between
    return lsns


async def test_a_read_is_one_round_while_entries_are_applied(sqlite_pipeline) -> None:
    pipeline, engine = sqlite_pipeline
    await pipeline.submit([put(b"k", b"v0"), put(b"other", b"o0")])
    await engine.flush()  # in the table, not in the engine's buffer: a real disk read
    lsns = applies_during_reads(pipeline, engine, 5, lambda n: [
        put(b"k", b"v%d" % (n + 1)), put(b"other", b"o%d" % (n + 1))])
    item = await pipeline.current(b"k")
    # Before: 6 rounds (every read but the last saw an apply). Now: one, and the answer is
    # the write applied during it, not the row the read found.
    assert engine.reads == 1
    assert lsns == [2] and item == StoredItem(b"v1", False, 2, None)
    assert (await pipeline.current_many([b"k", b"other", b"none"])) == [
        StoredItem(b"v2", False, 3, None), StoredItem(b"o2", False, 3, None), None]
    assert engine.reads == 2


async def test_the_version_a_blind_put_replaces_is_one_round(sqlite_pipeline) -> None:
    pipeline, engine = sqlite_pipeline
    await pipeline.submit([put(b"k", b"v0")])
    await engine.flush()
    # A delete, then puts to other keys only, applied during the reads.
    applies_during_reads(pipeline, engine, 3, lambda n: [delete(b"k")] if n == 0 else
                         [put(b"x%d" % n, b"x")])
    assert await pipeline.live_versions([b"k", b"x1"], now=0.0) == [None, None]
    assert engine.reads == 1
    assert await pipeline.live_versions([b"k", b"x1"], now=0.0) == [None, 3]
    assert engine.reads == 2
    await pipeline.barrier()
    assert pipeline._overlay == {} and not pipeline._retired  # nothing held after the reads


async def test_keys_all_pending_need_no_engine_read(sqlite_pipeline) -> None:
    pipeline, engine = sqlite_pipeline
    pending = pipeline.submit([put(b"k", b"v1"), delete(b"gone")])  # ordered, not applied
    assert await pipeline.current_many([b"k", b"gone"]) == [
        StoredItem(b"v1", False, 1, None), None]
    assert engine.reads == 0
    await pending


async def test_a_reset_under_a_read_reads_again(sqlite_pipeline) -> None:
    """The only case that takes a second round: the overlay was cleared under the read (a
    snapshot installed, a suffix dropped), so the read's answer may be of another state."""
    pipeline, engine = sqlite_pipeline
    await pipeline.submit([put(b"k", b"v0")])
    calls = 0

    async def between() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            pipeline.reset(pipeline.last_lsn, pipeline.epoch)

    engine.between = between
    assert (await pipeline.current_many([b"k"]))[0].value == b"v0"
    assert engine.reads == 2


# --- the property: any interleaving of reads, writes and applies ---------------------------


class GatedMemory(MemoryEngine):
    """A memory engine whose ``get_many`` suspends until the test releases it, answering with
    the state at its start or at its end (a disk read may take either)."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[tuple[asyncio.Event, bool]] = []

    async def get_many(self, keys: Sequence[bytes]) -> list[StoredItem | None]:
        gate, early = self.gates.pop(0)
        if early:
            items = await super().get_many(keys)
            await gate.wait()
            return items
        await gate.wait()
        return await super().get_many(keys)


KEYS = [b"a", b"b", b"c"]
STEPS = st.lists(st.one_of(
    st.tuples(st.just("read"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=3),
              st.booleans()),
    st.tuples(st.just("finish"), st.integers(0, 5)),
    st.tuples(st.just("write"), st.sampled_from(KEYS), st.booleans()),
    st.tuples(st.just("apply")),
), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_reads_answer_the_newest_state_in_write_order(tmp_path_factory, steps) -> None:
    asyncio.run(_interleave(tmp_path_factory.mktemp("wal"), steps))


async def _interleave(directory: Path, steps: list[tuple]) -> None:
    wal = await WriteAheadLog.open(directory / "wal", WalOptions(fsync=FsyncPolicy.NEVER))
    engine = GatedMemory()
    pipeline = CommitPipeline(wal, engine, epoch=1, clock=lambda: 0.0)
    newest: dict[bytes, StoredItem | None] = {}  # in write order: the model
    checked: list[tuple[list[StoredItem | None], list[StoredItem | None]]] = []
    gates: list[asyncio.Event] = []
    readers: list[asyncio.Task[None]] = []

    async def read(keys: list[bytes]) -> None:
        items = await pipeline.current_many(keys)
        checked.append((items, [newest.get(k) for k in keys]))  # no await in between

    try:
        for step in steps:
            if step[0] == "read":
                gate = asyncio.Event()
                engine.gates.append((gate, step[2]))
                gates.append(gate)
                readers.append(asyncio.create_task(read(step[1])))
                await asyncio.sleep(0)  # the read begins
            elif step[0] == "finish" and gates:
                gates.pop(step[1] % len(gates)).set()
                for _ in range(3):
                    await asyncio.sleep(0)
            elif step[0] == "write":
                key, is_put = step[1], step[2]
                lsn = pipeline.last_lsn + 1
                pipeline.submit([put(key, b"%d" % lsn) if is_put else delete(key)])
                newest[key] = StoredItem(b"%d" % lsn, False, lsn, None) if is_put else None
            elif step[0] == "apply":
                await pipeline.barrier()
        for gate in gates:
            gate.set()
        await asyncio.gather(*readers)
        await pipeline.barrier()
        for items, expected in checked:
            assert items == expected
        assert pipeline._overlay == {} and not pipeline._retired
    finally:
        await pipeline.close()
        await wal.close()


# --- the store: versions stay right under concurrent writes on SQLite ----------------------


@pytest.mark.parametrize("engine_name", ["memory", "sqlite"])
async def test_concurrent_writes_record_the_versions_they_replace(
        engine_name: str, tmp_path: Path) -> None:
    """Blind puts, compare-and-swaps and counters on a few keys, concurrently, with the
    SQLite buffer flushed often (so reads go to the table and applies land mid-read): each
    write's logged ``prev_version`` is the version of the key's previous write, and every
    compare-and-swap that won did so on the version it read."""
    config = StoreConfig(data_dir=tmp_path, engine=engine_name,
                         wal=WalOptions(fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0,
                         sqlite_flush_entries=3, sqlite_flush_interval_s=0.001)
    store = await Store.open(config)
    keys = [b"k%d" % i for i in range(4)]

    async def blind(i: int) -> None:
        for n in range(25):
            await store.put(keys[(i + n) % len(keys)], b"%d" % n)

    async def cas(i: int) -> None:
        for n in range(25):
            key = keys[(i * 3 + n) % len(keys)]
            item = await store.get(key)
            with contextlib.suppress(VersionMismatch):  # another writer won meanwhile
                await store.put(key, b"cas", if_version=0 if item is None else item.version)

    async def counter() -> None:
        for _ in range(25):
            await store.incr(b"n")

    try:
        await asyncio.gather(*[blind(i) for i in range(4)], *[cas(i) for i in range(4)],
                             counter())
        last: dict[bytes, int | None] = {}
        for entry in store.wal.read_from(1):
            assert isinstance(entry, WalEntry)
            for m in entry.mutations:
                assert m.prev_version == last.get(m.key), (m.key, entry.lsn)
                last[m.key] = entry.lsn
        assert (await store.get(b"n")).value == b"25"
    finally:
        await store.close()
