"""``shardkv shard add|remove|weight`` and ``shardkv rebalance status|abort``: online
migrations from the command line (docs/resharding.md).

The admin token comes from ``SHARDKV_ADMIN_TOKEN``; without one, requests are signed as the
operator with the cluster credential (``SHARDKV_CLUSTER_TOKEN[_FILE]``, or the
``DIR/cluster.token`` that ``shardkv up`` generated). The coordinators come from
``--coordinator``, ``SHARDKV_COORDINATORS`` or ``DIR/cluster.json``. On a cluster started
by ``shardkv up`` (``DIR/launcher.json`` exists), ``shard add`` also starts the new shard's
members (the cluster's replication factor) as processes and records them in
``cluster.json``, and ``shard remove --wait`` stops the retired members once the shard is
drained and takes them out of ``cluster.json``.

``--wait`` follows the migration with a progress line (keys, MB/s, ETA) on stderr and exits
0 once it is ``done``, 1 with the reason if it ends ``aborted`` or ``failed``. Interrupting
the CLI changes nothing: the migration lives in the coordinators' map and goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shardkv.client.cli import add_target_arguments, resolve_target
from shardkv.cluster.cluster_credentials import TOKEN_FILE
from shardkv.cluster.cluster_token import ADMIN_TOKEN_ENV, CLUSTER_TOKEN_FILE_ENV, cluster_token
from shardkv.cluster.peer_auth import OPERATOR, signed_headers

FINISHED = ("done", "aborted", "failed")


class AdminError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        code = body.get("error") if isinstance(body, dict) else "ERROR"
        super().__init__(f"{code}: {message}")
        self.status = status


def _admin(urls: list[str], method: str, path: str, body: Any = None) -> Any:
    """One admin call, tried on each coordinator until one answers."""
    data = None if body is None else json.dumps(body).encode()
    last: Exception | None = None
    for url in urls:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = os.environ.get(ADMIN_TOKEN_ENV)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        else:  # signed per request (a signature is good once)
            headers.update(signed_headers(method, path, data or b"", OPERATOR))
        request = urllib.request.Request(f"{url}{path}", data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=15) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"null")
            except ValueError:
                answer = {"error": "HTTP", "message": str(exc)}
            raise AdminError(exc.code, answer) from None
        except OSError as exc:
            last = exc
    raise AdminError(0, {"error": "UNAVAILABLE", "message": f"no coordinator answered: {last}"})


def _coordinators(args: argparse.Namespace) -> list[str]:
    token_file = Path(args.dir) / TOKEN_FILE
    if cluster_token() is None and token_file.is_file():
        # A cluster from ``shardkv up``: sign with the credential it generated.
        os.environ[CLUSTER_TOKEN_FILE_ENV] = str(token_file.resolve())
    target = resolve_target(args)
    if "coordinators" not in target:
        raise AdminError(0, {"error": "INVALID_ARGUMENT",
                             "message": "shard commands need the coordinators, not --node"})
    return [str(url) for url in target["coordinators"]]


def progress_line(record: dict[str, Any]) -> str:
    moved = int(record.get("keys_moved") or 0)
    total = record.get("keys_total") or 0
    rate = float(record.get("rate_keys_s") or 0.0)
    elapsed = max(time.time() - float(record.get("started_at") or time.time()), 1e-3)
    mb_s = int(record.get("bytes_moved") or 0) / elapsed / 1e6
    width = 30
    done = min(moved / total, 1.0) if total else 0.0
    bar = "#" * int(done * width) + "-" * (width - int(done * width))
    eta = f"{max(total - moved, 0) / rate:.0f}s" if rate > 0 and total else "?"
    return (f"\r{record['id']} {record['state']:<11} [{bar}] {moved}/{total or '?'} keys "
            f"{mb_s:.2f} MB/s ETA {eta}   ")


def wait_for(urls: list[str], migration: str, quiet: bool,
             on_done: Callable[[dict[str, Any]], None] | None = None) -> int:
    while True:
        record = _admin(urls, "GET", f"/admin/migrations/{migration}")
        if not quiet:
            print(progress_line(record), end="", file=sys.stderr, flush=True)
        if record["state"] in FINISHED:
            if not quiet:
                print(file=sys.stderr)
            if record["state"] == "done":
                if on_done is not None:
                    on_done(record)
                return 0
            print(f"migration {migration} {record['state']}: {record.get('error')}",
                  file=sys.stderr)
            return 1
        time.sleep(0.5)


def _local_directory(args: argparse.Namespace) -> Path | None:
    directory = Path(args.dir)
    if args.coordinator or not (directory / "launcher.json").is_file():
        return None
    return directory.resolve()


def _start_local_members(args: argparse.Namespace, shard: str) -> list[str]:
    directory = _local_directory(args)
    if directory is None:
        return []
    from shardkv.cluster.launcher import ClusterPlan, LocalCluster
    from shardkv.cluster.shard_members import start_shard_members

    cluster = LocalCluster(directory, ClusterPlan.load(directory / "launcher.json"))
    return [spec.id for spec in start_shard_members(cluster, shard)]


def _retire_local_members(args: argparse.Namespace, record: dict[str, Any]) -> None:
    directory = _local_directory(args)
    retired = [str(n) for n in record.get("retired") or []]
    if directory is None or not retired:
        return
    from shardkv.cluster.shard_members import retire_members

    stopped = retire_members(directory, retired)
    if stopped:
        print(f"stopped retired nodes {', '.join(stopped)}", file=sys.stderr)


def _run(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except AdminError as exc:
            if getattr(args, "json", False):
                print(json.dumps({"error": str(exc)}))
            else:
                print(f"shardkv: {exc}", file=sys.stderr)
            return 1
    return run


def _shard(args: argparse.Namespace) -> int:
    urls = _coordinators(args)
    if args.action == "add":
        body: dict[str, Any] = {}
        if args.id:
            body["shard"] = args.id
        if args.weight is not None:
            body["weight"] = args.weight
        answer = _admin(urls, "POST", "/admin/shards", body)
        started = _start_local_members(args, answer["shard"])
        if args.json:
            print(json.dumps({**answer, "started_nodes": started}))
        else:
            print(f"migration {answer['migration']} adds shard {answer['shard']}"
                  + (f"; started nodes {', '.join(started)}" if started else ""))
        return wait_for(urls, answer["migration"], args.json) if args.wait else 0
    if args.action == "remove":
        answer = _admin(urls, "DELETE", f"/admin/shards/{args.id}")
        what = f"drains shard {answer['shard']} into the others"
    else:
        answer = _admin(urls, "PUT", f"/admin/shards/{args.id}/weight",
                        {"weight": args.weight})
        what = f"gives shard {answer['shard']} weight {args.weight}"
    if args.json:
        print(json.dumps(answer))
    else:
        print(f"migration {answer['migration']} {what}")
    if not args.wait:
        return 0
    return wait_for(urls, answer["migration"], args.json,
                    lambda record: _retire_local_members(args, record))


def _rebalance(args: argparse.Namespace) -> int:
    urls = _coordinators(args)
    if args.action == "abort":
        answer = _admin(urls, "POST", f"/admin/migrations/{args.id}/abort", {})
        print(json.dumps(answer) if args.json else f"migration {args.id} aborted")
        return 0
    listing = _admin(urls, "GET", "/admin/migrations")
    if args.json:
        print(json.dumps(listing))
        return 0
    running = listing.get("migration")
    rows = ([running] if running else []) + list(listing.get("migrations") or [])
    if not rows:
        print("no migrations")
    for r in rows:
        print(f"{r['id']:<22} {r['kind']:<6} shard {r['shard']:<6} {r['state']:<11} "
              f"{r['keys_moved']} keys {r['bytes_moved'] / 1e6:.1f} MB"
              + (f"  error: {r['error']}" if r.get("error") else ""))
    return 0


def _args_shard(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("action", choices=("add", "remove", "weight"))
    parser.add_argument("id", nargs="?", help="shard id (add: optional; remove, weight: "
                        "required)")
    parser.add_argument("weight_value", nargs="?", type=int, metavar="W",
                        help="the new weight (shard weight ID W)")
    parser.add_argument("--weight", type=int, help="weight of the new shard (add)")
    parser.add_argument("--wait", action="store_true",
                        help="follow the migration until it ends (progress on stderr)")


def _shard_checked(args: argparse.Namespace) -> int:
    if args.action in ("remove", "weight") and not args.id:
        print(f"shardkv shard {args.action}: the shard id is required", file=sys.stderr)
        return 2
    if args.action == "weight":
        if args.weight_value is None and args.weight is None:
            print("shardkv shard weight: give the new weight (shard weight ID W)",
                  file=sys.stderr)
            return 2
        args.weight = args.weight_value if args.weight_value is not None else args.weight
    if args.weight is not None and args.weight < 1:
        print("shardkv shard: the weight must be a positive integer", file=sys.stderr)
        return 2
    return _run(_shard)(args)


def _args_rebalance(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("action", choices=("status", "abort"))
    parser.add_argument("id", nargs="?", help="migration id (abort)")


def _rebalance_checked(args: argparse.Namespace) -> int:
    if args.action == "abort" and not args.id:
        print("shardkv rebalance abort: the migration id is required", file=sys.stderr)
        return 2
    return _run(_rebalance)(args)


COMMANDS = [
    ("shard", "add, remove or reweight a shard (an online migration)", _args_shard,
     _shard_checked),
    ("rebalance", "show or abort online migrations", _args_rebalance, _rebalance_checked),
]
