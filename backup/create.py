"""``shardkv backup create``: an online, consistent backup of the whole cluster.

1. The map at a recorded version (refused while a resharding runs: its keys are in two
   shards at once until the flip).
2. For every shard, one member's rows at one LSN, streamed from its
   ``GET /admin/backup/export`` (``node/backup/export.py``) into a zstd (and optionally
   AES-256-GCM) file in the destination; a healthy replica is asked first so the primary is
   not slowed, the primary only when no replica answers. Writes go on meanwhile.
3. The map again: if the ring changed meanwhile, the backup is void.
4. The manifest, last: its presence makes the backup complete.

On any failure every object this backup wrote is removed and the error names the cause
(an unreachable or full destination, a member that stopped mid-stream, ...).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import msgpack
from shardkv.backup.cluster_access import admin_headers, fetch_map
from shardkv.backup.progress import ProgressLine
from shardkv.backup.repository.destination import Destination
from shardkv.backup.repository.encryption import key_id
from shardkv.backup.repository.errors import BackupError
from shardkv.backup.repository.manifest import (
    BACKUPS_PREFIX,
    Manifest,
    ShardBackup,
    manifest_name,
    new_backup_id,
    shard_file_name,
)
from shardkv.backup.repository.record_stream import RecordWriter
from shardkv.cluster.migration_record import RUNNING_STATES

EXPORT_PATH = "/admin/backup/export"
READ_BYTES = 256 << 10
EXPORT_TIMEOUT_S = 60.0


class MemberFailed(BackupError):
    """One member could not deliver its rows; another member of the shard may."""


@dataclass(frozen=True)
class Candidate:
    node: str
    url: str
    role: str


def candidates(cluster_map: dict[str, Any], shard: str) -> list[Candidate]:
    """The shard's members to read from, best first: replicas that are up, the primary
    after them, members the map does not show as up last."""
    info = cluster_map["shards"][shard]
    primary = info.get("primary")
    nodes = cluster_map.get("nodes", {})
    ranked = []
    for node_id in info.get("members", []):
        node = nodes.get(node_id) or {}
        if not node.get("url"):
            continue
        up = node.get("status", "up") == "up"
        is_primary = node_id == primary
        ranked.append(((not up, is_primary, node_id),
                       Candidate(node_id, node["url"], "primary" if is_primary else "replica")))
    return [c for _, c in sorted(ranked, key=lambda item: item[0])]


class _ExportStream:
    """One member's export, decoded as it arrives."""

    def __init__(self, url: str) -> None:
        request = urllib.request.Request(f"{url.rstrip('/')}{EXPORT_PATH}",
                                         headers=admin_headers("GET", EXPORT_PATH))
        try:
            self._resp = urllib.request.urlopen(request, timeout=EXPORT_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise MemberFailed(f"{url} refused the export ({exc.code}): "
                              f"{exc.read()[:300].decode(errors='replace')}") from None
        except OSError as exc:
            raise MemberFailed(f"{url} did not answer: {exc}") from None
        self._unpacker = msgpack.Unpacker(raw=False, use_list=True, max_buffer_size=64 << 20)
        self.header: dict[str, Any] | None = None
        self.trailer: dict[str, Any] | None = None
        self.url = url

    def packed_rows(self) -> Iterator[tuple[bytes, int]]:
        """The rows as the member packed them, in runs ``(bytes, how many rows)``: they are
        stored as they are (each checked to be a 4-element array), not unpacked and packed
        again, which halves the tool's CPU per row."""
        buffer = bytearray()
        base = 0  # stream offset of buffer[0]
        mark = 0  # stream offset where the rows not yet handed out begin
        try:
            while chunk := self._resp.read(READ_BYTES):
                buffer += chunk
                self._unpacker.feed(chunk)
                count, rows_end = 0, mark
                for obj in self._unpacker:
                    position = self._unpacker.tell()
                    if self.header is None:
                        if not isinstance(obj, dict) or "lsn" not in obj:
                            raise MemberFailed(f"{self.url}: the export has no header")
                        self.header, mark, rows_end = obj, position, position
                    elif isinstance(obj, dict):
                        self.trailer = obj
                    elif type(obj) is list and len(obj) == 4:
                        count, rows_end = count + 1, position
                    else:
                        raise MemberFailed(f"{self.url}: the export sent a malformed row")
                if count:
                    yield bytes(buffer[mark - base:rows_end - base]), count
                    mark = rows_end
                del buffer[:mark - base]
                base = mark
        except OSError as exc:
            raise MemberFailed(f"{self.url}: the export stream broke: {exc}") from None
        finally:
            self._resp.close()
        if self.trailer is None or not self.trailer.get("end"):
            raise MemberFailed(f"{self.url}: the export stream was cut before its end")


def backup_shard(dest: Destination, backup_id: str, shard: str, member: Candidate,
                 key: bytes | None, progress: ProgressLine,
                 max_bytes_per_s: float | None = None) -> ShardBackup:
    name = shard_file_name(backup_id, shard, key is not None)
    stream = _ExportStream(member.url)
    writer = RecordWriter(dest, name, key)
    label = f"backup {shard} from {member.node} ({member.role})"
    started = time.monotonic()
    keys = 0
    try:
        for packed, count in stream.packed_rows():
            writer.write_packed(packed, count)
            keys += count
            progress.update(label, keys, writer.raw_bytes, started)
            if max_bytes_per_s:
                # Reading slower is the throttle: TCP backpressure makes the member's export
                # wait for the socket, which leaves its CPU to the foreground load.
                ahead = writer.raw_bytes / max_bytes_per_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        assert stream.header is not None and stream.trailer is not None
        if stream.trailer.get("count") != keys:
            raise MemberFailed(f"{member.url}: the export sent {keys} rows, its trailer says "
                              f"{stream.trailer.get('count')}")
    except BaseException:
        writer.abort()
        raise
    stored = writer.close()
    progress.done(label, keys, stored.raw_bytes, started)
    header = stream.header
    return ShardBackup(shard=shard, lsn=int(header["lsn"]), epoch=int(header["epoch"]),
                       node=member.node, role=str(header.get("role") or member.role),
                       taken_at=float(header["taken_at"]), keys=keys, file=stored)


def _ring_version(cluster_map: dict[str, Any]) -> int:
    return int((cluster_map.get("ring") or {}).get("version", 0))


def _check_no_migration(cluster_map: dict[str, Any]) -> None:
    record = cluster_map.get("migration")
    if isinstance(record, dict) and record.get("state") in RUNNING_STATES:
        raise BackupError(f"a resharding ({record.get('id')}) is in progress: back up once "
                          "it has finished (`shardkv rebalance status`)")


def create_backup(urls: list[str], dest: Destination, key: bytes | None,
                  progress: ProgressLine, *, max_bytes_per_s: float | None = None,
                  parallel: int = 1) -> Manifest:
    """Back the cluster up into ``dest``; ``parallel`` shards at a time (each from its own
    member), ``max_bytes_per_s`` per shard."""
    created_at = time.time()
    cluster_map = fetch_map(urls)
    _check_no_migration(cluster_map)
    if not cluster_map.get("shards"):
        raise BackupError("the cluster map has no shards yet")
    backup_id = new_backup_id(created_at)
    try:
        shards = _backup_all(dest, backup_id, cluster_map, key, progress, max_bytes_per_s,
                             parallel)
        after = fetch_map(urls)
        _check_no_migration(after)
        if _ring_version(after) != _ring_version(cluster_map):
            raise BackupError(f"the ring changed during the backup (version "
                              f"{_ring_version(cluster_map)} -> {_ring_version(after)}); "
                              "run it again")
        manifest = Manifest(backup_id=backup_id, created_at=created_at,
                            finished_at=time.time(), map_version=int(cluster_map["version"]),
                            ring=dict(cluster_map.get("ring") or {}),
                            cluster_map=cluster_map, shards=shards,
                            key_id=None if key is None else key_id(key))
        dest.put_bytes(manifest_name(backup_id), manifest.to_json())
    except BaseException:
        progress.end()
        _remove_partial(dest, backup_id)
        raise
    return manifest


def _backup_all(dest: Destination, backup_id: str, cluster_map: dict[str, Any],
                key: bytes | None, progress: ProgressLine, max_bytes_per_s: float | None,
                parallel: int) -> dict[str, ShardBackup]:
    ids = sorted(cluster_map["shards"])
    if parallel <= 1 or len(ids) == 1:
        return {shard: _backup_one(dest, backup_id, cluster_map, shard, key, progress,
                                   max_bytes_per_s) for shard in ids}
    # Threads: the work is I/O and zstd (which runs without the GIL), shards are independent.
    shards: dict[str, ShardBackup] = {}
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="backup") as pool:
        futures = {pool.submit(_backup_one, dest, backup_id, cluster_map, shard, key,
                               progress, max_bytes_per_s): shard for shard in ids}
        try:
            for future in as_completed(futures):
                shards[futures[future]] = future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return {shard: shards[shard] for shard in ids}


def _ready(member: Candidate) -> bool:
    """A replica answers ``/ready`` 200 only when it is caught up with its primary (within
    the node's ``ready_max_lag_entries`` and staleness bound)."""
    try:
        with urllib.request.urlopen(f"{member.url.rstrip('/')}/ready", timeout=2.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def healthy_first(members: list[Candidate]) -> list[Candidate]:
    """Ready replicas, then the primary, then replicas that are behind or not answering."""
    replicas = [m for m in members if m.role == "replica"]
    ready = [m for m in replicas if _ready(m)]
    return ready + [m for m in members if m.role == "primary"] + [
        m for m in replicas if m not in ready]


def _backup_one(dest: Destination, backup_id: str, cluster_map: dict[str, Any], shard: str,
                key: bytes | None, progress: ProgressLine,
                max_bytes_per_s: float | None = None) -> ShardBackup:
    errors = []
    for member in healthy_first(candidates(cluster_map, shard)):
        try:
            return backup_shard(dest, backup_id, shard, member, key, progress, max_bytes_per_s)
        except MemberFailed as exc:  # destination trouble propagates: no member helps there
            progress.note(f"backup {shard}: {exc}; trying another member")
            errors.append(str(exc))
    raise BackupError(f"no member of shard {shard} could be backed up: " + "; ".join(errors))


def _remove_partial(dest: Destination, backup_id: str) -> None:
    try:
        for info in dest.list(f"{BACKUPS_PREFIX}{backup_id}/"):
            dest.delete(info.name)
    except BackupError:
        pass  # the destination is gone: nothing we wrote there can be read as complete
