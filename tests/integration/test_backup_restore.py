"""Backup and restore with real processes (docs/backup.md).

A source cluster (2 shards x 2 members, WAL archiving every 0.2 s into the backup
directory) and a target of another shape (3 shards x 1): a backup taken under a 16-client
write load restores key for key (values and expiry times) into the target; the point-in-time
restore brings back exactly the writes acknowledged before the time asked for; bad input
(a non-empty target, an altered file, a wrong key, a time outside the window, a full
destination) is refused with an error naming it, and leaves the target empty.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import started_cluster
from eventually import eventually_async
from moto_s3 import make_bucket, moto_s3_fixture  # noqa: F401  (registers `moto_s3`)
from shardkv.backup.create import create_backup
from shardkv.backup.inspection import describe, verify
from shardkv.backup.pitr import plan_restore
from shardkv.backup.progress import ProgressLine
from shardkv.backup.repository.catalog import backup_ids
from shardkv.backup.repository.destination import LocalDestination
from shardkv.backup.repository.errors import BackupError, MissingFile, WrongKey
from shardkv.backup.repository.record_stream import read_records
from shardkv.backup.restore import restore
from shardkv.client import Client

pytestmark = pytest.mark.integration

QUIET = ProgressLine(quiet=True)
SHAPE = {"coordinators": 1, "engine": "memory", "fsync": "never"}


@pytest.fixture(scope="module")
def dest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, dest_dir: Path) -> Any:
    saved = dict(os.environ)
    os.environ["SHARDKV_ARCHIVE_TO"] = str(dest_dir)  # for the nodes this starts only
    os.environ["SHARDKV_ARCHIVE_INTERVAL_S"] = "0.2"
    try:
        with started_cluster(tmp_path_factory.mktemp("source"), **SHAPE, shards=2,
                             replicas=2) as cluster:
            os.environ.clear()
            os.environ.update(saved)
            yield cluster
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with started_cluster(tmp_path_factory.mktemp("target"), **SHAPE, shards=3,
                         replicas=1) as cluster:
        yield cluster


async def _state(urls: list[str]) -> dict[bytes, tuple[bytes, float | None, int]]:
    """Every key of a cluster: value, expiry, version."""
    async with Client(urls) as kv:
        keys = [item.key async for item in kv.scan(prefix=b"")]
        items = await kv.mget(keys) if keys else []
    return {k: (it.value, it.expires_at, it.version) for k, it in zip(keys, items, strict=True)
            if it is not None}


def _same(a: dict[bytes, tuple[bytes, float | None, int]],
          b: dict[bytes, tuple[bytes, float | None, int]]) -> None:
    assert sorted(a) == sorted(b)
    for key, (value, expires, _version) in a.items():
        other_value, other_expires, _ = b[key]
        assert other_value == value, key
        assert other_expires == expires, key  # the expiry time itself comes back


async def _load(urls: list[str], stop: asyncio.Event, clients: int = 16) -> int:
    """``clients`` writers: puts (a third with a TTL) and some deletes, until ``stop``."""
    async def writer(n: int) -> int:
        rng = random.Random(n)
        done = 0
        async with Client(urls) as kv:
            while not stop.is_set():
                key = f"load:{n}:{rng.randrange(200)}"
                if rng.random() < 0.1:
                    await kv.mdelete([key])
                else:
                    await kv.put(key, os.urandom(rng.randrange(1, 300)),
                                 ttl=3600 + n if rng.random() < 0.3 else None)
                done += 1
        return done
    return sum(await asyncio.gather(*(writer(n) for n in range(clients))))


async def _wipe(urls: list[str]) -> None:
    from shardkv.backup.restore import wipe

    async with Client(urls) as kv:
        await wipe(kv)


async def test_backup_under_load_restores_into_another_shape(source, target, dest_dir):
    src, dst = source.plan.coordinator_urls(), target.plan.coordinator_urls()
    dest = LocalDestination(dest_dir, create=True)
    stop = asyncio.Event()
    load = asyncio.create_task(_load(src, stop))
    await eventually_async(lambda: _has_keys(src, 200), within_s=30, what="the load to start")
    during = await asyncio.to_thread(lambda: create_backup(src, dest, None, QUIET, parallel=2))
    stop.set()
    assert await load > 0
    assert set(during.shards) == {"s1", "s2"}
    assert all(s.role == "replica" for s in during.shards.values()), "read from replicas"
    after = await asyncio.to_thread(create_backup, src, dest, None, QUIET)

    # Quiescent backup -> target of another shape: the same keys, values and expiry times.
    plan = plan_restore(dest, after.backup_id, None)
    report = await restore(dest, plan, None, dst, force=False, progress=QUIET)
    assert report.keys == after.keys > 0
    source_state, target_state = await _state(src), await _state(dst)
    _same(source_state, target_state)
    floor = after.max_version
    assert all(version > floor for _v, _e, version in target_state.values()), \
        "restored versions are above every version in the backup"

    # The backup taken under load restores to exactly what it recorded.
    rows = {}
    for shard in during.shards.values():
        for key, value, expires_at, version in read_records(dest, shard.file, None):
            rows[bytes(key)] = (bytes(value), expires_at, version)
    plan = plan_restore(dest, during.backup_id, None)
    await restore(dest, plan, None, dst, force=True, progress=QUIET)
    _same(rows, await _state(dst))
    assert verify(dest).ok


async def _has_keys(urls: list[str], n: int) -> bool:
    async with Client(urls) as kv:
        count = 0
        async for _item in kv.scan(prefix=b"load:", limit=n):
            count += 1
        return count >= n


async def test_point_in_time_restore_brings_back_exactly_the_acknowledged_writes(
        source, target, dest_dir):
    src, dst = source.plan.coordinator_urls(), target.plan.coordinator_urls()
    dest = LocalDestination(dest_dir, create=True)
    await asyncio.to_thread(create_backup, src, dest, None, QUIET)
    acks: list[tuple[float, float]] = []
    async with Client(src) as kv:
        await kv.put("pitr:doomed", b"x")
        await kv.mdelete(["pitr:doomed"])
        for i in range(12):
            sent = time.time()
            await kv.put(f"pitr:{i}", f"v{i}".encode(), ttl=900 if i % 2 else None)
            acks.append((sent, time.time()))
            await asyncio.sleep(0.03)
    last_ack = acks[-1][1]

    async def archived() -> bool:
        listing = await asyncio.to_thread(describe, dest)
        return (listing["backups"][-1].get("restorable_until") or 0) >= last_ack
    await eventually_async(archived, within_s=20, what="the archive to reach the last write")

    k = 6  # between the ack of write 6 and the send of write 7
    at = (acks[k][1] + acks[k + 1][0]) / 2
    plan = plan_restore(dest, None, at)
    report = await restore(dest, plan, None, dst, force=True, progress=QUIET)
    assert report.entries_replayed > 0
    restored = await _state(dst)
    assert [f"pitr:{i}".encode() in restored for i in range(12)] == [i <= k for i in range(12)]
    assert restored[b"pitr:5"][0] == b"v5" and restored[b"pitr:5"][1] is not None
    assert b"pitr:doomed" not in restored

    with pytest.raises(BackupError, match="after the restorable window"):
        plan_restore(dest, None, time.time() + 3600)
    with pytest.raises(BackupError, match="before the restorable window"):
        plan_restore(dest, None, 1_000_000.0)


async def test_bad_input_is_refused_and_leaves_the_target_empty(source, target, dest_dir,
                                                                tmp_path, capsys):
    src, dst = source.plan.coordinator_urls(), target.plan.coordinator_urls()
    await _wipe(dst)
    async with Client(dst) as kv:
        await kv.put("occupied", b"1")
    key = secrets.token_bytes(32)
    enc_dir = tmp_path / "encrypted"
    enc = LocalDestination(enc_dir, create=True)
    manifest = await asyncio.to_thread(create_backup, src, enc, key, QUIET)
    assert manifest.key_id is not None

    # A non-empty target without --force: refused, untouched.
    plan = plan_restore(enc, None, None)
    with pytest.raises(BackupError, match="not empty"):
        await restore(enc, plan, key, dst, force=False, progress=QUIET)
    assert list(await _state(dst)) == [b"occupied"]
    await _wipe(dst)

    # A wrong key: named before anything is written.
    with pytest.raises(WrongKey, match="wrong encryption key"):
        await restore(enc, plan, secrets.token_bytes(32), dst, force=False, progress=QUIET)
    assert await _state(dst) == {}

    # An altered file: verify names it (exit 1), restore refuses it before writing.
    damaged_dir = tmp_path / "damaged"
    shutil.copytree(enc_dir, damaged_dir)
    damaged = LocalDestination(damaged_dir, create=False)
    victim = damaged_dir / manifest.shards["s2"].file.name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    (damaged_dir / manifest.shards["s1"].file.name).unlink()  # and one file missing
    code, out, _err = _main(capsys, "verify", "--from", str(damaged_dir))
    assert code == 1
    assert f"damaged file {manifest.shards['s2'].file.name}" in out
    assert f"missing file {manifest.shards['s1'].file.name}" in out
    with pytest.raises(MissingFile, match=r"s1\.kv\.zst\.aes"):
        await restore(damaged, plan_restore(damaged, None, None), key, dst, force=False,
                      progress=QUIET)
    assert await _state(dst) == {}
    assert _main(capsys, "verify", "--from", str(enc_dir))[0] == 0

    # A full destination (a 16 KiB file size limit): error, and no backup left behind.
    full_dir = tmp_path / "full"
    result = _cli("create", "--to", str(full_dir), "--coordinator", ",".join(src), "--quiet",
                  limit_file_bytes=16 << 10)
    assert result.returncode == 1, result.stderr
    assert "destination is full" in result.stderr
    assert backup_ids(LocalDestination(full_dir, create=False)) == ([], [])

    # Unreachable: a destination that is not a directory.
    code, _out, err = _main(capsys, "list", "--from", str(tmp_path / "nowhere"))
    assert code == 1 and "is not a directory" in err
    # And with the right key, the encrypted backup restores.
    report = await restore(enc, plan_restore(enc, None, None), key, dst, force=False,
                           progress=QUIET)
    assert report.keys == manifest.keys == len(await _state(dst))


def test_cli_backup_to_s3_and_restore(source, target, moto_s3, capsys):
    """The CLI end to end (in this process: the same entry point, without an interpreter's
    start-up per command): create with retention, list, restore from S3."""
    from shardkv.cluster.cli import main

    src, dst = source.plan.coordinator_urls(), target.plan.coordinator_urls()
    make_bucket("drill")
    capsys.readouterr()
    assert main(["backup", "create", "--to", "s3://drill/prod", "--coordinator", ",".join(src),
                 "--keep", "1"]) == 0
    out = capsys.readouterr()
    backup_id = out.out.strip()
    assert "keys from 2 shards" in out.err
    assert main(["backup", "list", "--from", "s3://drill/prod"]) == 0
    assert backup_id in capsys.readouterr().out
    asyncio.run(_wipe(dst))
    assert main(["backup", "restore", "--from", "s3://drill/prod", "--coordinator",
                 ",".join(dst)]) == 0
    assert f"restored backup {backup_id}" in capsys.readouterr().out
    _same(asyncio.run(_state(src)), asyncio.run(_state(dst)))


async def test_the_writer_routes_again_when_a_node_refuses(source):
    """A stale map (s1's rows sent to s2's primary, then to a replica): the nodes answer
    STALE_MAP / NOT_PRIMARY, the writer re-reads the map and every row lands where it
    belongs."""
    import aiohttp
    from shardkv.backup.repository.wal_archive import PUT
    from shardkv.backup.shard_writer import ShardWriter

    src = source.plan.coordinator_urls()
    async with aiohttp.ClientSession() as session:
        writer = ShardWriter(src, session)
        cmap = await writer.refresh()
        replica = next(m for m in cmap.shards["s2"].members if m != cmap.shards["s2"].primary)
        cmap.shards["s1"].primary = cmap.shards["s2"].primary  # wrong shard: STALE_MAP
        cmap.shards["s2"].primary = replica                    # a replica: NOT_PRIMARY
        await writer.write([[PUT, f"route:{i}".encode(), b"v", None] for i in range(60)])
        assert writer.cluster_map is not cmap, "the map was read again"
    async with Client(src) as kv:
        items = await kv.mget([f"route:{i}" for i in range(60)])
    assert all(item is not None and item.value == b"v" for item in items)


def test_a_dead_replica_is_passed_over_for_the_primary(source, tmp_path):
    """A replica that does not answer is ranked after the primary; the shard is still read."""
    from shardkv.backup.cluster_access import fetch_map
    from shardkv.backup.create import _backup_one, candidates, healthy_first
    from shardkv.cluster.local_processes import free_port

    async def fill() -> None:
        async with Client(source.plan.coordinator_urls()) as kv:
            await kv.mput([(f"dead:{i}", os.urandom(2000)) for i in range(200)])
    asyncio.run(fill())
    cluster_map = fetch_map(source.plan.coordinator_urls())
    info = cluster_map["shards"]["s1"]
    for node_id in info["members"]:
        if node_id != info["primary"]:  # every replica of s1 points at a closed port
            cluster_map["nodes"][node_id]["url"] = f"http://127.0.0.1:{free_port()}"
    ranked = healthy_first(candidates(cluster_map, "s1"))
    assert ranked[0].role == "primary"
    rate = 1e6  # and --max-rate holds the read to 1 MB/s
    started = time.monotonic()
    shard = _backup_one(LocalDestination(tmp_path, create=True), "b", cluster_map, "s1", None,
                        QUIET, rate)
    assert shard.role == "primary" and shard.node == info["primary"] and shard.keys > 0
    assert time.monotonic() - started >= shard.file.raw_bytes / rate * 0.9


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``shardkv backup ...`` in this process: exit status, stdout, stderr."""
    from shardkv.cluster.cli import main

    capsys.readouterr()
    code = main(["backup", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _cli(*argv: str, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if limit_file_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", "backup", *argv],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)
