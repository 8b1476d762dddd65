"""The WAL's own writer thread: the groups that do not go to the disk from the event loop.

Every group is sent to the thread here (``SHARDKV_WAL_IN_LOOP=0``), so that what happens
there is checked without depending on how fast this machine's disk syncs: one persistent
thread for every group, the log's order and durability as before, and a failed sync on the
thread failing the group's writers, the log and (through the Store) the node's writes.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from shardkv.cluster.errors import OutcomeUnknown, Unavailable
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal import segment_writer
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.segment import SegmentHeader
from shardkv.node.wal.segment_writer import GroupResult, SegmentWriter
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalFailed, WalOptions, WriteAheadLog
from shardkv.node.wal.writer_thread import WalWriterThread


def entry(lsn: int) -> WalEntry:
    return WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"key-%d" % lsn, b"v" * 64),),
                    ts=1_700_000_000.0 + lsn)


@pytest.fixture
def off_the_loop(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every group to the thread; returns the thread ident of each group written, in order."""
    monkeypatch.setenv("SHARDKV_WAL_IN_LOOP", "0")
    writers: list[int] = []
    write_group = SegmentWriter.write_group

    def recording(writer: SegmentWriter, parts: Sequence[bytes | SegmentHeader],
                  sync: bool) -> GroupResult:
        writers.append(threading.get_ident())
        return write_group(writer, parts, sync)

    monkeypatch.setattr(SegmentWriter, "write_group", recording)
    return writers


def broken_sync(failed_on: list[int]) -> object:
    def sync(fd: int) -> None:
        failed_on.append(threading.get_ident())
        raise OSError(errno.EIO, "Input/output error")
    return sync


async def test_every_group_off_the_loop_runs_on_one_persistent_thread(
    tmp_path: Path, off_the_loop: list[int]
) -> None:
    wal = await WriteAheadLog.open(tmp_path, WalOptions(fsync=FsyncPolicy.ALWAYS))
    for lsn in range(1, 4):
        await wal.append(entry(lsn))
    await asyncio.gather(*[wal.append_nowait(entry(lsn)) for lsn in range(4, 20)])
    assert wal.durable_lsn == 19
    assert len(set(off_the_loop)) == 1 and off_the_loop[0] != threading.get_ident()
    thread = next(t for t in threading.enumerate() if t.ident == off_the_loop[0])
    assert thread.name == "shardkv-wal-writer"
    await wal.close()
    thread.join(5)
    assert not thread.is_alive()  # close stops it
    reopened = await WriteAheadLog.open(tmp_path)
    assert [e.lsn for e in reopened.read_from(1)] == list(range(1, 20))
    await reopened.close()


async def test_a_failed_sync_on_the_writer_thread_fails_the_group_and_poisons_the_log(
    tmp_path: Path, off_the_loop: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = await WriteAheadLog.open(tmp_path, WalOptions(fsync=FsyncPolicy.ALWAYS))
    await wal.append(entry(1))
    failed_on: list[int] = []
    monkeypatch.setattr(segment_writer, "fdatasync", broken_sync(failed_on))
    group = [wal.append_nowait(entry(lsn)) for lsn in range(2, 6)]
    outcomes = await asyncio.gather(*group, return_exceptions=True)
    assert all(isinstance(o, WalFailed) and "Input/output error" in str(o) for o in outcomes)
    assert failed_on and failed_on[0] == off_the_loop[-1] != threading.get_ident()
    assert wal.durable_lsn == 1  # nothing of the failed group was acknowledged
    with pytest.raises(WalFailed):
        wal.append_nowait(entry(6))
    await wal.close()


async def test_a_failed_sync_on_the_writer_thread_is_the_stores_write_failure(
    tmp_path: Path, off_the_loop: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(StoreConfig(data_dir=tmp_path, engine="memory",
                                         wal=WalOptions(fsync=FsyncPolicy.ALWAYS),
                                         ttl_sweep_interval_s=0))
    try:
        await store.put(b"k", b"v")
        monkeypatch.setattr(segment_writer, "fdatasync", broken_sync([]))
        with pytest.raises(OutcomeUnknown):  # ordered, never acknowledged: fate unknown
            await store.put(b"k", b"w")
        assert store.write_failure is not None  # what node/write_failure.py watches
        with pytest.raises(Unavailable):
            await store.put(b"other", b"x")
        assert (await store.get(b"k")).value == b"v"
    finally:
        await store.close()


async def test_the_thread_runs_calls_in_order_and_survives_a_caller_that_gave_up() -> None:
    thread = WalWriterThread(asyncio.get_running_loop(), name="test-wal-writer")
    release = threading.Event()
    ran: list[int] = []

    def blocked() -> None:
        release.wait(5)
        ran.append(0)

    first = thread.run(blocked)
    second = thread.run(ran.append, 1)
    first.cancel()  # the awaiting task was cancelled: the call still runs, its outcome drops
    release.set()
    await second
    assert ran == [0, 1]

    def failing() -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        await thread.run(failing)
    assert await thread.run(lambda: 42) == 42
    thread.close()
    thread.join(5)
    with pytest.raises(RuntimeError):
        thread.run(ran.append, 2)
