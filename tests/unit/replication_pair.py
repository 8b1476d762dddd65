"""A primary and its replicas in one process, for the replication stream's tests: real WALs in
temp dirs, real aiohttp websockets. A primary is a WAL + memory engine written the way the
Store writes (append, then the commit gate); replicas are ``ReplicationReplica`` over
``EngineReplicaLog``. The test modules import the fixtures ``make_primary`` and
``make_replica`` by name.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from shardkv.node.replication import protocol as proto
from shardkv.node.replication import stream_auth
from shardkv.node.replication.primary import ReplicationPrimary
from shardkv.node.replication.replica import ReplicationReplica
from shardkv.node.replication.replica_log import EngineReplicaLog
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.storage.snapshots.snapshot import SnapshotMeta, write_snapshot
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog

FAST = WalOptions(fsync=FsyncPolicy.NEVER, segment_bytes=4096)


async def digest(engine: MemoryEngine) -> str:
    rows = await engine.scan(None, None, 1_000_000)
    h = hashlib.sha256()
    for key, item in rows:
        h.update(key + b"\0" + item.value + b"\0%d\n" % item.version)
    return h.hexdigest()


@dataclass
class Primary:
    wal: WriteAheadLog
    engine: MemoryEngine
    repl: ReplicationPrimary
    url: str
    runner: web.AppRunner
    snapshot_dir: Path
    epoch: int = 1
    members: list[str] = field(default_factory=list)

    async def write(self, count: int, *, commit: bool = True, prefix: bytes = b"k") -> None:
        """Write ``count`` entries as the Store does: order, WAL, gate, apply."""
        for _ in range(count):
            lsn = self.wal.last_lsn + 1
            mutation = Mutation(MutationKind.PUT, prefix + b"%d" % (lsn % 37), b"v%d" % lsn)
            entry = WalEntry(lsn, self.epoch, (mutation,), time.time())
            await self.wal.append(entry)
            if commit:
                await self.repl.commit_gate(entry)
            else:  # as write concern "one" would: applied without waiting for a majority
                self.repl.publish(entry)
                self.repl.local_durable(lsn)
            await self.engine.apply(entry)

    async def snapshot(self) -> SnapshotMeta:
        view = await self.engine.snapshot_view()
        return await write_snapshot(self.snapshot_dir, view.lsn, self.epoch, view.rows)


class StuckTarget:
    """A replica target whose appends block until released: a replica on a dead (or busy)
    disk. ``entered`` is set once an append has begun."""

    def __init__(self, inner: EngineReplicaLog) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.wal = inner.wal
        self.engine = inner.engine

    last_lsn = property(lambda self: self.inner.last_lsn)
    last_epoch = property(lambda self: self.inner.last_epoch)
    applied_lsn = property(lambda self: self.inner.applied_lsn)

    async def append(self, entries: Sequence[WalEntry]) -> None:
        self.entered.set()
        await self.release.wait()
        await self.inner.append(entries)

    async def truncate_after(self, lsn: int) -> None:
        await self.inner.truncate_after(lsn)

    async def install_snapshot(self, chunks, lsn: int, epoch: int) -> None:  # type: ignore[no-untyped-def]
        await self.inner.install_snapshot(chunks, lsn, epoch)


@pytest.fixture
async def make_primary(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Primary]]]:
    made: list[Primary] = []

    async def make(members: Sequence[str] = ("p", "r1", "r2"), secret: str | None = None,
                   **options: object) -> Primary:
        wal = await WriteAheadLog.open(tmp_path / "p" / "wal", FAST)
        engine = await MemoryEngine.open()
        holder: dict[str, Primary] = {}
        repl = ReplicationPrimary(
            wal, node_id="p", epoch=lambda: holder["p"].epoch,
            members=lambda: holder["p"].members,
            snapshot_source=lambda: holder["p"].snapshot(), heartbeat_s=0.02, **options)
        app = web.Application()
        if secret is None:
            app.router.add_get(proto.PATH, repl.serve)
        else:
            async def authenticate(ws: web.WebSocketResponse, request: web.Request) -> str:
                return await stream_auth.authenticate_replica(ws, request, "p", secret)

            async def serve(request: web.Request) -> web.StreamResponse:
                return await repl.serve(request, authenticate)

            app.router.add_get(proto.PATH, serve)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        primary = Primary(wal, engine, repl, f"http://127.0.0.1:{port}", runner,
                          tmp_path / "p" / "snapshots", members=list(members))
        holder["p"] = primary
        made.append(primary)
        return primary

    yield make
    for primary in made:
        await primary.repl.close()
        await primary.runner.cleanup()
        await primary.wal.close()


@pytest.fixture
async def make_replica(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[ReplicationReplica]]]:
    made: list[ReplicationReplica] = []

    async def make(name: str, url: str | None, epoch: int = 1,
                   wrap: Callable[[EngineReplicaLog], object] | None = None) -> ReplicationReplica:
        wal = await WriteAheadLog.open(tmp_path / name / "wal", FAST)
        target = EngineReplicaLog(wal, await MemoryEngine.open(), tmp_path / name / "snapshots")
        replica = ReplicationReplica(wrap(target) if wrap else target,  # type: ignore[arg-type]
                                     node_id=name, primary_url=url, epoch=epoch)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.stop()
        await replica.target.wal.close()  # type: ignore[attr-defined]
