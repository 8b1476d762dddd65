"""``shardkv backup create|restore|list|verify|delete`` (docs/backup.md).

``create --to DEST`` and ``restore --from DEST`` find the cluster as every CLI command does
(``--coordinator``, ``SHARDKV_COORDINATORS``, ``--dir``). DEST is a directory or
``s3://bucket/prefix``. The encryption key comes from ``--key-file``,
``SHARDKV_BACKUP_KEY_FILE`` or ``SHARDKV_BACKUP_KEY``; without one, nothing is encrypted.
Exit status: 0 done, 1 failed (the message names the cause, the damaged file or the
problem with ``--at``), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from shardkv.client.cli import add_target_arguments

ACTIONS = ("create", "restore", "list", "verify", "delete")


def parse_time(text: str) -> float:
    """``2026-12-06T17:01:02.5Z`` (ISO 8601; no zone means UTC) or ``@1765040462.5``."""
    text = text.strip()
    if text.startswith("@"):
        try:
            return float(text[1:])
        except ValueError:
            pass
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    raise argparse.ArgumentTypeError(
        f"not a time: {text!r} (use ISO 8601 such as 2026-12-06T17:01:02Z, or @UNIX_SECONDS)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="backup_action", metavar="|".join(ACTIONS))
    actions.required = True
    create = actions.add_parser("create", help="back up the whole cluster, online")
    create.add_argument("--to", required=True, metavar="DEST", help="a directory or "
                        "s3://bucket/prefix")
    add_target_arguments(create)
    _key_and_quiet(create)
    create.add_argument("--keep", type=int, metavar="N", help="afterwards, keep only the "
                        "newest N backups (with the WAL they need)")
    create.add_argument("--keep-days", type=float, metavar="D", help="afterwards, delete "
                        "backups older than D days (the newest is always kept)")
    create.add_argument("--max-rate", type=float, metavar="MB/S", help="read at most this "
                        "many MB/s (raw) from the cluster, to leave the members' CPU to the "
                        "foreground load); per shard")
    create.add_argument("--parallel", type=int, default=1, metavar="N", help="back up N "
                        "shards at a time, each from its own member (default 1)")
    restore = actions.add_parser("restore", help="restore a backup into a fresh cluster")
    restore.add_argument("--from", dest="source", required=True, metavar="DEST")
    restore.add_argument("--backup", metavar="ID", help="which backup (default: the newest, "
                         "or with --at the newest before that time)")
    restore.add_argument("--at", type=parse_time, metavar="TIME", help="point in time: "
                         "replay the archived WAL up to TIME (ISO 8601, UTC by default, or "
                         "@UNIX_SECONDS)")
    restore.add_argument("--force", action="store_true", help="empty a non-empty target "
                         "cluster first")
    add_target_arguments(restore)
    _key_and_quiet(restore)
    listing = actions.add_parser("list", help="backups in DEST and their restorable window")
    listing.add_argument("--from", dest="source", required=True, metavar="DEST")
    listing.add_argument("--json", action="store_true")
    check = actions.add_parser("verify", help="check every checksum and the WAL archive's "
                               "continuity; exit 1 naming each damaged file")
    check.add_argument("--from", dest="source", required=True, metavar="DEST")
    check.add_argument("--backup", metavar="ID", help="only this backup")
    check.add_argument("--deep", action="store_true", help="also decrypt and decode every "
                       "record (needs the key if encrypted)")
    check.add_argument("--key-file", metavar="FILE")
    check.add_argument("--json", action="store_true")
    remove = actions.add_parser("delete", help="delete a backup, or apply retention")
    remove.add_argument("--from", dest="source", required=True, metavar="DEST")
    remove.add_argument("--backup", metavar="ID")
    remove.add_argument("--keep", type=int, metavar="N")
    remove.add_argument("--keep-days", type=float, metavar="D")
    remove.add_argument("--json", action="store_true")


def _key_and_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-file", metavar="FILE", help="AES-256-GCM key (32 bytes as hex "
                        "or base64; default $SHARDKV_BACKUP_KEY_FILE, $SHARDKV_BACKUP_KEY)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _print(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    print(json.dumps(obj, indent=2, default=str) if getattr(args, "json", False) else text)


def _create(args: argparse.Namespace) -> int:
    from shardkv.backup.cluster_access import coordinators
    from shardkv.backup.create import create_backup
    from shardkv.backup.inspection import delete
    from shardkv.backup.progress import ProgressLine
    from shardkv.backup.repository.destination import open_destination
    from shardkv.backup.repository.encryption import load_key

    key = load_key(args.key_file)
    urls = coordinators(args)
    dest = open_destination(args.to, create=True)
    started = time.monotonic()
    manifest = create_backup(urls, dest, key, ProgressLine(quiet=args.quiet or args.json),
                             max_bytes_per_s=args.max_rate * 1e6 if args.max_rate else None,
                             parallel=args.parallel)
    seconds = time.monotonic() - started
    summary: dict[str, Any] = {
        "backup": manifest.backup_id, "destination": dest.url, "keys": manifest.keys,
        "raw_bytes": manifest.raw_bytes, "stored_bytes": manifest.stored_bytes,
        "seconds": round(seconds, 3), "encrypted": manifest.key_id is not None,
        "shards": {s: {"lsn": b.lsn, "node": b.node, "role": b.role, "keys": b.keys}
                   for s, b in sorted(manifest.shards.items())},
    }
    if args.keep is not None or args.keep_days is not None:
        summary["retention"] = delete(dest, backup_id=None, keep=args.keep,
                                      keep_days=args.keep_days)
    if args.json:
        _print(args, summary, "")
    else:
        print(manifest.backup_id)
        print(f"{manifest.keys} keys from {len(manifest.shards)} shards, "
              f"{manifest.raw_bytes / 1e6:.1f} MB raw -> {manifest.stored_bytes / 1e6:.1f} MB "
              f"stored, in {seconds:.1f}s", file=sys.stderr)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from shardkv.backup.cluster_access import coordinators
    from shardkv.backup.pitr import plan_restore
    from shardkv.backup.progress import ProgressLine
    from shardkv.backup.repository.destination import open_destination
    from shardkv.backup.repository.encryption import load_key
    from shardkv.backup.restore import restore

    key = load_key(args.key_file)
    urls = coordinators(args)
    dest = open_destination(args.source)
    plan = plan_restore(dest, args.backup, args.at)
    report = asyncio.run(restore(dest, plan, key, urls, force=args.force,
                                 progress=ProgressLine(quiet=args.quiet or args.json)))
    from shardkv.backup.pitr import fmt_time

    text = (f"restored backup {report.backup_id}: {report.keys} keys"
            + (f" + {report.entries_replayed} log entries up to {fmt_time(plan.at)}"
               if plan.at is not None else "")
            + f" in {report.seconds:.1f}s")
    _print(args, report.to_dict(), text)
    return 0


def _list(args: argparse.Namespace) -> int:
    from shardkv.backup.inspection import describe, render
    from shardkv.backup.repository.destination import open_destination

    listing = describe(open_destination(args.source))
    _print(args, listing, render(listing))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from shardkv.backup.inspection import verify
    from shardkv.backup.repository.destination import open_destination
    from shardkv.backup.repository.encryption import load_key

    key = load_key(args.key_file) if args.deep else None
    report = verify(open_destination(args.source), backup_id=args.backup, deep=args.deep,
                    key=key)
    lines = [f"warning: {w}" for w in report.warnings] + [f"DAMAGED: {p}" for p in
                                                          report.problems]
    lines.append(f"{'ok' if report.ok else 'FAILED'}: {report.files} files, "
                 f"{report.bytes / 1e6:.1f} MB checked, {len(report.problems)} problems")
    _print(args, report.to_dict(), "\n".join(lines))
    return 0 if report.ok else 1


def _delete(args: argparse.Namespace) -> int:
    from shardkv.backup.inspection import delete
    from shardkv.backup.repository.destination import open_destination
    from shardkv.backup.repository.errors import BackupError

    if args.backup is None and args.keep is None and args.keep_days is None:
        raise BackupError("say what to delete: --backup ID, --keep N or --keep-days D")
    result = delete(open_destination(args.source), backup_id=args.backup, keep=args.keep,
                    keep_days=args.keep_days)
    _print(args, result, f"deleted {len(result['deleted'])} backups "
                         f"({', '.join(result['deleted']) or 'none'}), "
                         f"{result['wal_chunks_pruned']} archived WAL chunks")
    return 0


_RUN = {"create": _create, "restore": _restore, "list": _list, "verify": _verify,
        "delete": _delete}


def run(args: argparse.Namespace) -> int:
    from shardkv.backup.repository.errors import BackupError
    from shardkv.cluster.errors import ShardKVError

    try:
        return _RUN[args.backup_action](args)
    except (BackupError, ShardKVError) as exc:
        print(f"shardkv backup {args.backup_action}: {exc}", file=sys.stderr)
        return 1


COMMANDS = [
    ("backup", "backup create|restore|list|verify|delete: online backups, point-in-time "
     "restore (docs/backup.md)", add_arguments, run),
]
