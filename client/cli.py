"""The data commands of ``shardkv``: status, get, put, del, incr, scan, mget, mput, load,
watch.

Where the cluster is, in order: ``--node URL`` (one standalone node, no coordinator),
``--coordinator URL[,URL]``, ``SHARDKV_COORDINATORS``, then the coordinators listed in
``DIR/cluster.json`` (``--dir``, default ``./.shardkv``, what ``shardkv up`` writes).

Output is for people by default (the value itself, a table) and one JSON document with
``--json``, so scripts never parse a table. Exit status: 0 success, 1 an error or a key not
found (the message on stderr, or ``{"error": ...}`` with ``--json``), 2 a usage mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shardkv.client.async_client import COORDINATORS_ENV, Client, coordinators_in
from shardkv.client.bulk_load import load_file
from shardkv.client.cluster_status import collect_status, explain_key, render_status
from shardkv.client.values import Item
from shardkv.cluster import event_loop, wire
from shardkv.cluster.errors import ErrorCode, ShardKVError

DEFAULT_DIR = ".shardkv"


class UsageError(Exception):
    """A mistake in how the command was called: exit status 2."""


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", metavar="URL[,URL]",
                        help=f"coordinator URLs (default: ${COORDINATORS_ENV}, "
                        "then DIR/cluster.json)")
    parser.add_argument("--node", metavar="URL",
                        help="talk to one standalone node directly (no coordinator)")
    parser.add_argument("--dir", default=DEFAULT_DIR,
                        help=f"cluster directory of `shardkv up` (default {DEFAULT_DIR})")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="per-operation deadline, retries included (default 5)")


def resolve_target(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor arguments of the Client for these flags, or UsageError saying what to do."""
    if args.node:
        return {"nodes": [args.node]}
    if args.coordinator:
        return {"coordinators": [u.strip() for u in args.coordinator.split(",") if u.strip()]}
    env = os.environ.get(COORDINATORS_ENV, "").strip()
    if env:
        return {"coordinators": [u.strip() for u in env.split(",") if u.strip()]}
    try:
        urls = coordinators_in(Path(args.dir))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if urls:
        return {"coordinators": urls}
    raise UsageError(
        f"where is the cluster? pass --coordinator URL, set {COORDINATORS_ENV}, "
        f"run `shardkv up --dir {args.dir}` first, or use --node URL for a standalone node"
    )


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def _item_json(key: str, item: Item | None) -> dict[str, Any]:
    if item is None:
        return {"key": key, "found": False}
    return {"key": key, "found": True, "value": item.value, "version": item.version,
            "expires_at": item.expires_at}


def _print_json(obj: Any) -> None:
    """One JSON document; bytes become UTF-8 text, or ``{"b64": ...}`` when not UTF-8."""
    sys.stdout.write(wire.to_json(obj).decode("utf-8") + "\n")


def _read_value(raw: str) -> bytes:
    """A value argument; ``-`` reads it from stdin (binary-safe)."""
    if raw == "-":
        return sys.stdin.buffer.read()
    return raw.encode("utf-8")


# -- the commands ---------------------------------------------------------------------------

Runner = Callable[[Client, argparse.Namespace], Awaitable[int]]


async def _get(kv: Client, args: argparse.Namespace) -> int:
    item = await kv.get(args.key, consistency=args.consistency,
                        max_staleness_ms=args.max_staleness_ms, timeout=args.timeout)
    if args.json:
        _print_json(_item_json(args.key, item))
    elif item is not None:
        sys.stdout.buffer.write(item.value + b"\n")
    else:
        print(f"(not found) {args.key}", file=sys.stderr)
    return 0 if item is not None else 1


async def _put(kv: Client, args: argparse.Namespace) -> int:
    version = await kv.put(args.key, _read_value(args.value), ttl=args.ttl,
                           if_version=args.if_version, if_absent=args.if_absent,
                           write_concern=args.w, timeout=args.timeout)
    if args.json:
        _print_json({"key": args.key, "version": version})
    else:
        print(version)
    return 0


async def _del(kv: Client, args: argparse.Namespace) -> int:
    result = await kv.delete(args.key, if_version=args.if_version, write_concern=args.w,
                             timeout=args.timeout)
    if args.json:
        _print_json({"key": args.key, "deleted": result.deleted, "version": result.version})
    else:
        print("deleted" if result.deleted else "(not found)")
    return 0


async def _incr(kv: Client, args: argparse.Namespace) -> int:
    value = await kv.incr(args.key, args.by, write_concern=args.w, timeout=args.timeout)
    if args.json:
        _print_json({"key": args.key, "value": value})
    else:
        print(value)
    return 0


async def _scan(kv: Client, args: argparse.Namespace) -> int:
    rows = []
    async for item in kv.scan(args.prefix, start=args.start, end=args.end, limit=args.limit,
                              timeout=args.timeout):
        if args.json:
            rows.append({"key": item.key, "value": item.value, "version": item.version})
        else:
            sys.stdout.write(f"{_text(item.key)}\t{_text(item.value)}\n")
    if args.json:
        _print_json(rows)
    return 0


async def _mget(kv: Client, args: argparse.Namespace) -> int:
    items = await kv.mget(args.keys, consistency=args.consistency, timeout=args.timeout)
    if args.json:
        _print_json([_item_json(k, it) for k, it in zip(args.keys, items, strict=True)])
    else:
        for key, item in zip(args.keys, items, strict=True):
            shown = _text(item.value) if item is not None else "(not found)"
            sys.stdout.write(f"{key}\t{shown}\n")
    return 0


async def _mput(kv: Client, args: argparse.Namespace) -> int:
    pairs = []
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"mput takes KEY=VALUE pairs, got {pair!r}")
        pairs.append((key, value.encode("utf-8")))
    versions = await kv.mput(pairs, ttl=args.ttl, write_concern=args.w, timeout=args.timeout)
    if args.json:
        _print_json([{"key": k, "version": v} for (k, _), v in zip(pairs, versions, strict=True)])
    else:
        print(f"stored {len(pairs)} keys")
    return 0


async def _status(kv: Client, args: argparse.Namespace) -> int:
    status = await collect_status(kv, within=min(args.timeout, 2.0))
    if args.json:
        _print_json(status)
    else:
        sys.stdout.write(render_status(status))
    return 0 if status["available"] else 1


async def _primary(kv: Client, args: argparse.Namespace) -> int:
    """Which node is the primary of the shard that owns KEY (and its pid, for a cluster from
    `shardkv up`): what a failover demo kills."""
    cmap = await kv.refresh_map()
    shard_id = kv.router.shard_of(args.key.encode("utf-8"))
    primary = cmap.shards[shard_id].primary if shard_id in cmap.shards else None
    node = cmap.nodes.get(primary) if primary else None
    pid = _local_pid(Path(args.dir), primary) if primary else None
    if args.json:
        _print_json({"key": args.key, "shard": shard_id, "primary": primary,
                     "url": node.url if node else None, "pid": pid})
    elif primary is None:
        print(f"shard {shard_id} of {args.key} has no primary", file=sys.stderr)
    elif args.pid:
        if pid is None:
            raise UsageError(f"no pid for {primary}: not a cluster from `shardkv up` in "
                             f"{args.dir}")
        print(pid)
    else:
        print(primary)
    return 0 if primary else 1


def _local_pid(directory: Path, node_id: str) -> int | None:
    """The pid of a node as DIR/cluster.json records it (None if not there)."""
    try:
        described = json.loads((directory / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in described.get("nodes", []):
        if entry.get("id") == node_id and isinstance(entry.get("pid"), int):
            return int(entry["pid"])
    return None


async def _load(kv: Client, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not await asyncio.to_thread(path.is_file):
        raise UsageError(f"{path} is not a file")
    bar = not (args.json or args.quiet)

    def skipped(problem: str) -> None:  # each skipped line, as it is found
        print(f"{chr(10) if bar else ''}skipped {path}:{problem}", file=sys.stderr)

    report = await load_file(kv, path, fmt=args.format, batch_size=args.batch,
                             concurrency=args.concurrency, ttl=args.ttl,
                             progress=sys.stderr if bar else None, on_skip=skipped)
    if args.json:
        _print_json(report)
    else:
        print(f"loaded {report['loaded']} keys in {report['seconds']:.2f}s "
              f"({report['rate']:.0f} keys/s); {report['skipped']} lines skipped"
              + (" (listed on stderr)" if report["skipped"] else ""))
    if report["errors"] or report["failed"]:
        return 1
    if args.strict and report["skipped"]:
        print(f"shardkv load: --strict: {report['skipped']} lines skipped", file=sys.stderr)
        return 1
    return 0


async def _watch(kv: Client, args: argparse.Namespace) -> int:
    """Print events as they commit, one a line, until interrupted (or ``--count``)."""
    if args.key is not None and (args.prefix is not None or args.start is not None):
        raise UsageError("watch takes a KEY, --prefix, or --start/--end, not several")
    if args.key is None and args.prefix is None and args.start is None:
        raise UsageError("watch what? give a KEY, --prefix P (--prefix '' for every key), "
                         "or --start/--end")
    shown = 0
    stream = kv.watch(args.key, prefix=args.prefix, start=args.start, end=args.end,
                      start_version=args.from_version, values=not args.no_values,
                      consistency=args.consistency or "strong",
                      max_staleness_ms=args.max_staleness_ms)
    try:
        async for event in stream:
            if args.json:
                _print_json(event.to_json())
            else:
                value = "" if event.value is None else "=" + _text(event.value)
                sys.stdout.write(f"{event.type} {_text(event.key or b'')}{value} "
                                 f"@{event.version} ({event.shard})\n")
            sys.stdout.flush()
            shown += 1
            if args.count is not None and shown >= args.count:
                break
    finally:
        await stream.aclose()
    return 0


async def _with_client(runner: Runner, args: argparse.Namespace) -> int:
    target = resolve_target(args)
    async with Client(**target, timeout=args.timeout, watch_map=False) as kv:
        try:
            return await runner(kv, args)
        except ShardKVError as exc:
            raise await _explained(kv, args, exc) from None


async def _explained(kv: Client, args: argparse.Namespace, exc: ShardKVError) -> ShardKVError:
    """An UNAVAILABLE (or TIMEOUT) for a key, with the owning shard and why it cannot serve
    (from the map and a probe of its members) in place of a bare socket error."""
    key = getattr(args, "key", None)
    if exc.code not in (ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT) or key is None:
        return exc
    reason = await explain_key(kv, key)
    if reason is None:
        return exc
    explained = type(exc)(f"{reason} (the client saw: {exc.message})", **exc.details)
    explained.code = exc.code
    return explained


def _runner(runner: Runner) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return event_loop.run(_with_client(runner, args))
        except KeyboardInterrupt:
            return 0  # how a watch is ended
        except UsageError as exc:
            print(f"shardkv {args.command}: {exc}", file=sys.stderr)
            return 2
        except ShardKVError as exc:
            if args.json:
                _print_json(exc.to_dict())
            else:
                print(f"shardkv {args.command}: {exc.code.value}: {exc.message}",
                      file=sys.stderr)
            return 1

    return run


# -- argument parsers ---------------------------------------------------------------------


def _read_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consistency", choices=("strong", "eventual"), default=None)
    parser.add_argument("--eventual", dest="consistency", action="store_const",
                        const="eventual", help="read a replica (same as --consistency eventual)")


def _write_concern(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-w", "--write-concern", dest="w", choices=("majority", "one"),
                        default=None, help="acknowledge after a majority (default) or one")


def _args_status(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)


def _args_get(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("key")
    _read_options(p)
    p.add_argument("--max-staleness-ms", type=int, default=None)


def _args_put(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("key")
    p.add_argument("value", help="the value (UTF-8 text), or - to read it from stdin")
    p.add_argument("--ttl", type=float, default=None, metavar="SECONDS")
    p.add_argument("--if-version", type=int, default=None, help="compare-and-swap")
    p.add_argument("--if-absent", action="store_true", help="only create")
    _write_concern(p)


def _args_del(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("key")
    p.add_argument("--if-version", type=int, default=None)
    _write_concern(p)


def _args_incr(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("key")
    p.add_argument("--by", type=int, default=1, help="delta (default 1; may be negative)")
    _write_concern(p)


def _args_scan(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("--prefix", default=None)
    p.add_argument("--start", default=None, help="first key (inclusive)")
    p.add_argument("--end", default=None, help="last key (exclusive)")
    p.add_argument("--limit", type=int, default=None)


def _args_mget(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("keys", nargs="+")
    _read_options(p)


def _args_mput(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--ttl", type=float, default=None, metavar="SECONDS")
    _write_concern(p)


def _args_primary(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("key")
    p.add_argument("--pid", action="store_true",
                   help="print the primary's pid (a cluster from `shardkv up`)")


def _args_load(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("file", help="JSONL ({\"key\": ..., \"value\": ...} per line) or CSV "
                   "(key,value; a header row is skipped)")
    p.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                   help="default: from the file extension")
    p.add_argument("--batch", type=int, default=200, help="keys per mput (default 200)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="batches in flight (default 8)")
    p.add_argument("--ttl", type=float, default=None, metavar="SECONDS")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any line was skipped (each is named on stderr either way)")


def _args_watch(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("key", nargs="?", default=None, help="watch this one key")
    p.add_argument("--prefix", default=None, help="watch the keys with this prefix")
    p.add_argument("--start", default=None, help="first key of a range (inclusive)")
    p.add_argument("--end", default=None, help="end of the range (exclusive)")
    p.add_argument("--from", dest="from_version", type=int, default=None, metavar="V",
                   help="replay every write after version V first (per shard)")
    p.add_argument("--no-values", action="store_true", help="events without values")
    _read_options(p)
    p.add_argument("--max-staleness-ms", type=int, default=None,
                   help="with --eventual: a replica within this bound may serve the watch")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="exit after N events (default: until interrupted)")


COMMANDS = [
    ("status", "shards, members, roles, LSN, lag and health as a table", _args_status,
     _runner(_status)),
    ("primary", "which node is the primary for a key (--pid: its process id)",
     _args_primary, _runner(_primary)),
    ("get", "read a key", _args_get, _runner(_get)),
    ("put", "write a key", _args_put, _runner(_put)),
    ("del", "delete a key", _args_del, _runner(_del)),
    ("incr", "add to a counter", _args_incr, _runner(_incr)),
    ("scan", "list keys by prefix or range, in key order", _args_scan, _runner(_scan)),
    ("mget", "read many keys", _args_mget, _runner(_mget)),
    ("mput", "write many KEY=VALUE pairs", _args_mput, _runner(_mput)),
    ("load", "bulk load a JSONL or CSV file (progress on stderr)", _args_load, _runner(_load)),
    ("watch", "print changes to a key, prefix or range as they commit (one a line)",
     _args_watch, _runner(_watch)),
]
