"""The order of a majority write's steps, and how a stream session ends.

A write at one client at a time is as slow as its slower path: the primary's own write and
fsync, or the trip to a replica and that replica's fsync. The two overlap only if the entry
leaves for the replicas before the primary starts writing it (and a write on the event loop
blocks the loop until the disk answers). The primary here is wired as the node wires it: a
``CommitPipeline`` whose ``on_submit`` publishes to the senders and whose gate waits for a
majority; real WALs in temp dirs, real websockets; every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from eventually import eventually
from shardkv.node.replication import protocol as proto
from shardkv.node.replication.primary import ReplicationPrimary
from shardkv.node.replication.replica import ReplicationReplica
from shardkv.node.replication.replica_log import EngineReplicaLog
from shardkv.node.storage.commit_pipeline import CommitPipeline
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.segment_writer import GroupResult, SegmentWriter
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog

OPTIONS = WalOptions(fsync=FsyncPolicy.ALWAYS)


@dataclass
class Primary:
    wal: WriteAheadLog
    repl: ReplicationPrimary
    pipeline: CommitPipeline
    url: str
    epoch: int = 1

    async def put(self, key: bytes, value: bytes) -> int:
        return await self.pipeline.submit([Mutation(MutationKind.PUT, key, value)])


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[Primary]:
    wal = await WriteAheadLog.open(tmp_path / "p" / "wal", OPTIONS)
    engine = await MemoryEngine.open()
    holder: dict[str, Primary] = {}

    async def no_snapshot() -> object:
        raise AssertionError("no replica here needs a snapshot")

    repl = ReplicationPrimary(
        wal, node_id="p", epoch=lambda: holder["p"].epoch, members=lambda: ["p", "r1", "r2"],
        snapshot_source=no_snapshot,  # type: ignore[arg-type]
        heartbeat_s=30.0)  # no heartbeat in the way: the senders wait only for entries
    pipeline = CommitPipeline(wal, engine, epoch=1, clock=time.time, gate=repl.commit_gate)
    pipeline.on_submit = repl.publish
    app = web.Application()
    app.router.add_get(proto.PATH, repl.serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    holder["p"] = Primary(wal, repl, pipeline, f"http://127.0.0.1:{runner.addresses[0][1]}")
    yield holder["p"]
    await repl.close()
    await pipeline.close()
    await runner.cleanup()
    await wal.close()


@pytest.fixture
async def make_replica(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[ReplicationReplica]]]:
    made: list[ReplicationReplica] = []

    async def make(name: str, url: str,
                   wrap: Callable[[EngineReplicaLog], object] | None = None) -> ReplicationReplica:
        wal = await WriteAheadLog.open(tmp_path / name / "wal", OPTIONS)
        target = EngineReplicaLog(wal, await MemoryEngine.open(), tmp_path / name / "snapshots")
        replica = ReplicationReplica(wrap(target) if wrap else target,  # type: ignore[arg-type]
                                     node_id=name, primary_url=url, epoch=1)
        made.append(replica)
        replica.start()
        await replica.wait_synced(10)
        return replica

    yield make
    for replica in made:
        await replica.stop()
        await replica.target.wal.close()  # type: ignore[attr-defined]


async def test_an_entry_leaves_for_the_replicas_before_the_primary_writes_it(
    primary: Primary, make_replica: Callable[..., Awaitable[ReplicationReplica]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_replica("r1", primary.url)
    await make_replica("r2", primary.url)
    sent_at_local_write: list[dict[str, int]] = []
    write_group = SegmentWriter.write_group
    primary_writer = primary.wal._writer_io

    def recording(writer: SegmentWriter, parts: Sequence[bytes], sync: bool) -> GroupResult:
        if writer is primary_writer:
            sent_at_local_write.append(
                {p["node"]: p["sent_lsn"] for p in primary.repl.replicas()})
        return write_group(writer, parts, sync)

    monkeypatch.setattr(SegmentWriter, "write_group", recording)
    for n in range(1, 6):
        lsn = await primary.put(b"k", b"v%d" % n)
        assert lsn == n
        # One group per write (each waits for the previous): when the primary began writing
        # entry n, both replicas had already been sent it.
        assert sent_at_local_write[-1] == {"r1": n, "r2": n}
    assert primary.repl.majority_lsn == 5


class GatedTarget:
    """A replica target whose appends wait for ``release``, noting any that are cancelled."""

    def __init__(self, inner: EngineReplicaLog) -> None:
        self.inner = inner
        self.wal = inner.wal
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0

    last_lsn = property(lambda self: self.inner.last_lsn)
    last_epoch = property(lambda self: self.inner.last_epoch)
    applied_lsn = property(lambda self: self.inner.applied_lsn)

    async def append(self, entries: Sequence[WalEntry]) -> None:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await self.inner.append(entries)

    async def truncate_after(self, lsn: int) -> None:
        await self.inner.truncate_after(lsn)

    async def install_snapshot(self, chunks, lsn: int, epoch: int) -> None:  # type: ignore[no-untyped-def]
        await self.inner.install_snapshot(chunks, lsn, epoch)


async def test_a_retarget_lets_the_frame_in_hand_finish_and_be_acknowledged(
    primary: Primary, make_replica: Callable[..., Awaitable[ReplicationReplica]],
) -> None:
    gated: list[GatedTarget] = []

    def wrap(target: EngineReplicaLog) -> GatedTarget:
        gated.append(GatedTarget(target))
        return gated[0]

    replica = await make_replica("r1", primary.url, wrap=wrap)
    writing = asyncio.create_task(primary.put(b"k", b"v"))
    await asyncio.wait_for(gated[0].entered.wait(), 10)
    primary.epoch = 2
    replica.retarget(primary.url, 2)  # while the frame's append is in progress
    gated[0].release.set()
    assert await asyncio.wait_for(writing, 10) == 1  # r1's acknowledgement made the majority
    await eventually(lambda: replica.handshakes == 2)
    assert gated[0].cancelled == 0 and replica.target.applied_lsn == 1


async def test_a_sender_that_fails_ends_the_session_and_the_replica_resumes(
    primary: Primary, make_replica: Callable[..., Awaitable[ReplicationReplica]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replica = await make_replica("r1", primary.url)
    await primary.put(b"a", b"1")
    next_batch = primary.repl._next_batch
    failed: list[int] = []

    async def compacted_once(lsn: int) -> list[WalEntry] | None:
        if lsn == 2 and not failed:
            failed.append(lsn)
            return None  # as if the entries had been compacted under the sender
        return await next_batch(lsn)

    monkeypatch.setattr(primary.repl, "_next_batch", compacted_once)
    assert await asyncio.wait_for(primary.put(b"b", b"2"), 10) == 2
    await eventually(lambda: replica.target.applied_lsn == 2)
    assert failed == [2] and replica.handshakes == 2


async def test_closing_the_primary_ends_every_session(
    primary: Primary, make_replica: Callable[..., Awaitable[ReplicationReplica]],
) -> None:
    replicas = [await make_replica(name, primary.url) for name in ("r1", "r2")]
    await primary.put(b"a", b"1")
    await primary.repl.close("deposed")
    await eventually(lambda: not any(r.connected for r in replicas))
    await eventually(lambda: not any(p["connected"] for p in primary.repl.replicas()))
