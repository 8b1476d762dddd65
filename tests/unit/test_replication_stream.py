"""WAL shipping end to end in one process: real WALs in temp dirs, real aiohttp websockets.

A primary is a WAL + memory engine written the way the Store writes (append, then the commit
gate); replicas are ``ReplicationReplica`` over ``EngineReplicaLog``. Everything waited on is
a condition with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from eventually import eventually
from shardkv.cluster import wire
from shardkv.cluster.errors import Timeout, Unavailable
from shardkv.node.replication import protocol as proto
from shardkv.node.replication import replica as replication_replica
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


async def test_two_replicas_converge_and_majority_commits(make_primary, make_replica) -> None:
    primary = await make_primary()
    replicas = [await make_replica(n, primary.url) for n in ("r1", "r2")]
    for r in replicas:
        r.start()
    await primary.write(300)
    assert primary.repl.majority_lsn >= 300
    for r in replicas:
        await eventually(lambda r=r: r.target.applied_lsn == 300)
        assert await digest(r.target.engine) == await digest(primary.engine)
    stats = {s["node"]: s for s in primary.repl.replicas()}
    await eventually(lambda: all(s["acked_lsn"] == 300 for s in primary.repl.replicas()))
    assert set(stats) == {"r1", "r2"} and all(s["connected"] for s in stats.values())


async def test_no_majority_times_out_and_is_never_committed(make_primary, make_replica) -> None:
    primary = await make_primary()
    await primary.write(5, commit=False)
    with pytest.raises(Timeout):
        await primary.repl.wait_for_majority(5, 0.05)
    assert primary.repl.majority_lsn == 0
    replica = await make_replica("r1", primary.url)
    replica.start()
    await primary.repl.wait_for_majority(5, 10)  # one replica + the primary: 2 of 3
    assert primary.repl.majority_lsn == 5


async def test_single_member_shard_commits_alone(make_primary) -> None:
    primary = await make_primary(members=["p"])
    await primary.write(3)
    assert primary.repl.majority_lsn == 3


async def test_close_fails_pending_commits_as_unavailable(make_primary) -> None:
    primary = await make_primary()
    await primary.write(1, commit=False)
    waiting = asyncio.create_task(primary.repl.wait_for_majority(1, None))
    await asyncio.sleep(0)
    await primary.repl.close("deposed")
    with pytest.raises(Unavailable):
        await waiting


class StuckTarget:
    """A replica target whose appends block until released: a replica on a dead disk."""

    def __init__(self, inner: EngineReplicaLog) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.wal = inner.wal
        self.engine = inner.engine

    last_lsn = property(lambda self: self.inner.last_lsn)
    last_epoch = property(lambda self: self.inner.last_epoch)
    applied_lsn = property(lambda self: self.inner.applied_lsn)

    async def append(self, entries: Sequence[WalEntry]) -> None:
        await self.release.wait()
        await self.inner.append(entries)

    async def truncate_after(self, lsn: int) -> None:
        await self.inner.truncate_after(lsn)

    async def install_snapshot(self, chunks, lsn: int, epoch: int) -> None:  # type: ignore[no-untyped-def]
        await self.inner.install_snapshot(chunks, lsn, epoch)


async def test_a_stuck_replica_never_blocks_writes(make_primary, make_replica) -> None:
    primary = await make_primary(tail_entries=16)
    stuck_target: list[StuckTarget] = []

    def wrap(target: EngineReplicaLog) -> StuckTarget:
        stuck_target.append(StuckTarget(target))
        return stuck_target[0]

    slow = await make_replica("r1", primary.url, wrap=wrap)
    fast = await make_replica("r2", primary.url)
    slow.start()
    fast.start()
    await slow.wait_synced(10)
    await primary.write(200)  # commits with the primary and r2
    assert primary.repl.majority_lsn == 200 and slow.target.applied_lsn == 0
    # Released, the slow one catches up from the WAL files: the tail holds only 16 entries.
    stuck_target[0].release.set()
    await eventually(lambda: slow.target.applied_lsn == 200)
    assert await digest(slow.target.engine) == await digest(primary.engine)


async def test_late_replica_catches_up_from_the_wal(make_primary, make_replica) -> None:
    primary = await make_primary(tail_entries=8)
    await primary.write(40, commit=False)
    replica = await make_replica("r1", primary.url)
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 40)
    await primary.repl.wait_for_majority(40, 10)


async def test_far_behind_replica_bootstraps_from_a_snapshot(make_primary, make_replica) -> None:
    primary = await make_primary()
    await primary.write(300, commit=False)
    meta = await primary.snapshot()
    await primary.wal.remove_before(meta.lsn)  # the entries a fresh replica needs are gone
    assert primary.wal.first_lsn > 1
    replica = await make_replica("r1", primary.url)
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 300)
    await primary.write(10)
    await eventually(lambda: replica.target.applied_lsn == 310)
    assert replica.snapshots_installed == 1
    assert await digest(replica.target.engine) == await digest(primary.engine)


async def test_old_primary_drops_its_unacknowledged_suffix(make_primary, make_replica) -> None:
    """A returning old primary: 10 shared entries (epoch 1), then 5 it wrote in epoch 1 that
    nobody acknowledged (never applied: the gate held them). The new primary has the 10 and
    started epoch 2 after them. The old one keeps the 10, drops the 5 and follows."""
    primary = await make_primary()
    await primary.write(10, commit=False)
    replica = await make_replica("old", primary.url, epoch=2)
    for entry in primary.wal.read_from(1):
        await replica.target.append([entry])
    stray = [WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"lost", b"x"),), 0.0)
             for lsn in range(11, 16)]
    await replica.target.wal.append_many(stray)  # logged, never applied
    primary.epoch = 2
    await primary.write(3, commit=False)  # 11..13 in epoch 2
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 13)
    assert replica.truncations == 1 and replica.snapshots_installed == 0
    assert [e.epoch for e in replica.target.wal.read_from(11)] == [2, 2, 2]
    assert await digest(replica.target.engine) == await digest(primary.engine)


async def test_diverged_applied_suffix_is_replaced_by_a_snapshot(
    make_primary, make_replica
) -> None:
    """A replica that applied entries of an epoch-1 history the new primary (epoch 2) never
    had cannot un-apply them: it is reseeded from a snapshot."""
    primary = await make_primary()
    primary.epoch = 2
    await primary.write(5, commit=False)
    replica = await make_replica("r1", primary.url, epoch=2)
    await replica.target.append([WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"x%d" % lsn,
                                                            b"y"),), 0.0) for lsn in (1, 2, 3)])
    replica.start()
    await eventually(lambda: replica.snapshots_installed == 1)
    await primary.write(2, commit=False)
    await eventually(lambda: replica.target.applied_lsn == 7)
    assert await digest(replica.target.engine) == await digest(primary.engine)


async def test_newer_epoch_fences_the_primary(make_primary, make_replica) -> None:
    newer: list[int] = []
    primary = await make_primary(on_newer_epoch=newer.append)
    await primary.write(2, commit=False)
    replica = await make_replica("r1", primary.url, epoch=5)
    replica.start()
    await eventually(lambda: bool(newer))
    assert newer[0] == 5 and replica.target.applied_lsn == 0
    await eventually(lambda: replica.last_error is not None and "StaleEpoch" in replica.last_error)


async def test_replica_reconnects_and_resumes(make_primary, make_replica) -> None:
    primary = await make_primary()
    replica = await make_replica("r1", primary.url)
    replica.start()
    await primary.write(20)
    await eventually(lambda: replica.target.applied_lsn == 20)
    replica.retarget(primary.url, 2)  # a new epoch: a fresh handshake
    primary.epoch = 2
    await eventually(lambda: replica.handshakes >= 2)
    await primary.write(5)
    await eventually(lambda: replica.target.applied_lsn == 25)
    assert replica.snapshots_installed == 0 and replica.truncations == 0


async def test_staleness_follows_heartbeats_not_writes(make_primary, make_replica) -> None:
    primary = await make_primary()
    replica = await make_replica("r1", primary.url)
    replica.start()
    await primary.write(3)
    await eventually(lambda: replica.target.applied_lsn == 3)
    # Idle: heartbeats keep it fresh (every 20 ms here), so a 1 s bound is always met.
    first = replica._fresh_at
    await eventually(lambda: replica._fresh_at != first)
    assert replica.is_fresh_within(1000)


def test_staleness_is_measured_from_when_the_primary_lsn_was_applied() -> None:
    now = [100.0]

    class Target:
        applied_lsn = 5
        last_lsn = 5
        last_epoch = 1

    replica = ReplicationReplica(Target(), node_id="r", primary_url=None, epoch=1,  # type: ignore[arg-type]
                                 clock=lambda: now[0])
    assert replica.staleness_ms() is None
    replica._saw_primary_at(5, 100.0)
    now[0] = 100.25
    assert replica.staleness_ms() == pytest.approx(250)
    replica._saw_primary_at(9, 100.25)  # the primary is at 9; we are not
    now[0] = 103.0
    assert replica.staleness_ms() == pytest.approx(3000)
    Target.applied_lsn = 9
    replica._applied_up_to(9)
    assert replica.staleness_ms() == pytest.approx(2750)


SECRET = "0123456789abcdef" * 4


async def _stranger_session(url: str, claim: str, proof: str) -> tuple[dict, list[dict]]:
    """Open the stream as ``claim`` with a made-up proof; the primary's auth frame and what
    followed it."""
    nonce = stream_auth.new_nonce()
    frames = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url + proto.PATH, headers=stream_auth.claim_headers(claim, nonce)) as ws:
        first = wire.unpack((await ws.receive(timeout=5)).data)
        await ws.send_bytes(wire.pack({"t": "auth", "proof": proof}))
        await ws.send_bytes(proto.Hello(claim, 999, 0, 0, False).encode())
        await ws.send_bytes(proto.encode(proto.ACK, lsn=10**9))
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.BINARY:
                return first, frames
            frames.append(wire.unpack(msg.data))


async def test_a_stranger_cannot_stream_ack_or_depose(make_primary, monkeypatch) -> None:
    """Without the key for node:r1 a stranger gets no entry, its acks and its epoch-999
    hello count for nothing."""
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    deposed: list[int] = []
    primary = await make_primary(secret=SECRET, on_newer_epoch=deposed.append)
    await primary.write(3, commit=False)
    first, after = await _stranger_session(primary.url, "r1", "00" * 32)
    assert first["t"] == "auth" and first["node"] == "p"
    assert [f["t"] for f in after] == [proto.ERROR]
    assert after[0]["error"] == "UNAUTHORIZED"
    assert deposed == []
    assert primary.repl.majority_lsn < 3  # no ack counted for r1


async def test_replicas_that_prove_themselves_follow(make_primary, make_replica,
                                                     monkeypatch) -> None:
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    primary = await make_primary(secret=SECRET)
    await primary.write(3, commit=False)
    replica = await make_replica("r1", primary.url)
    replica.primary_id = "p"
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 3)


async def test_a_replica_never_proves_itself_to_a_server_that_is_not_the_primary(
        make_primary, make_replica, monkeypatch) -> None:
    """The map names "q" as primary; the server at the URL is "p" (with a good key for p):
    the replica hangs up without sending a proof or a hello."""
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    primary = await make_primary(secret=SECRET)
    await primary.write(2, commit=False)
    replica = await make_replica("r1", primary.url)
    replica.primary_id = "q"
    replica.start()
    await eventually(lambda: replica.reconnects >= 2)
    assert replica.handshakes == 0 and replica.target.applied_lsn == 0
    assert "FORBIDDEN" in (replica.last_error or "") or "Forbidden" in (replica.last_error or "")


async def test_a_forged_primary_gets_no_proof_and_installs_nothing(make_replica,
                                                                  monkeypatch) -> None:
    """A server without the key answers at the primary's address with a made-up proof and
    then a truncate: the replica sends nothing after its opening headers."""
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    received: list[bytes] = []

    async def forged(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(wire.pack({"t": "auth", "node": "p",
                                       "nonce": stream_auth.new_nonce(), "proof": "ab" * 32}))
        await ws.send_bytes(proto.encode(proto.TRUNCATE, lsn=0, epoch=99))
        async for msg in ws:
            received.append(msg.data)
        return ws

    app = web.Application()
    app.router.add_get(proto.PATH, forged)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        replica = await make_replica("r1", f"http://127.0.0.1:{runner.addresses[0][1]}")
        replica.primary_id = "p"
        replica.start()
        await eventually(lambda: replica.reconnects >= 2)
        assert received == [] and replica.truncations == 0 and replica.handshakes == 0
    finally:
        await runner.cleanup()


@pytest.fixture
async def silent_host() -> AsyncIterator[str]:
    """An address that accepts TCP connections and then never answers (a listening socket
    nobody accepts from: the kernel completes the handshake, no HTTP reply ever comes), as a
    SIGSTOPped primary or a host behind a dropped route looks to a replica dialling it."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def test_a_retarget_is_followed_while_connecting_to_a_silent_primary(
    make_primary, make_replica, silent_host: str
) -> None:
    """A replica dialling a primary that never answers must follow the new primary as soon as
    the map names it, not when its connection attempt gives up."""
    replica = await make_replica("r1", silent_host)
    replica.start()
    await eventually(lambda: replica.reconnects == 0 and not replica.connected, within_s=1.0)
    primary = await make_primary()
    primary.epoch = 2
    replica.retarget(primary.url, 2)
    await primary.write(3)
    # Well inside the connect timeout: the retarget itself ended the attempt.
    await eventually(lambda: replica.target.applied_lsn == 3,
                within_s=replication_replica.CONNECT_TIMEOUT_S * 0.5)
    assert replica.handshakes == 1


async def test_a_connection_attempt_to_a_silent_primary_is_bounded(
    make_replica, silent_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replication_replica, "CONNECT_TIMEOUT_S", 0.2)
    replica = await make_replica("r1", silent_host)
    replica.start()
    await eventually(lambda: replica.reconnects >= 2, within_s=5.0)
    assert replica.last_error is not None and "no connection" in replica.last_error
    assert replica.handshakes == 0


async def test_a_primary_answers_each_hello_by_its_version(make_primary) -> None:
    """The protocol version rule over a real websocket: a replica one version behind is
    welcomed in its version; one two versions ahead gets an error frame saying why."""
    n = proto.PROTOCOL_VERSION
    primary = await make_primary()
    await primary.write(2, commit=False)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(primary.url + proto.PATH) as ws:
            await ws.send_bytes(proto.Hello("r1", 1, 0, 0, version=n - 1).encode())
            welcome = proto.decode((await ws.receive()).data)
            assert (welcome["t"], welcome["version"]) == (proto.WELCOME, n - 1)
        async with session.ws_connect(primary.url + proto.PATH) as ws:
            await ws.send_bytes(proto.Hello("r2", 1, 0, 0, version=n + 2).encode())
            error = proto.decode((await ws.receive()).data)
            assert error["t"] == proto.ERROR and error["error"] == "INVALID_ARGUMENT"
            assert "upgrade one version at a time" in error["message"]
