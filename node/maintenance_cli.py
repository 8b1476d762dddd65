"""``shardkv node snapshot|compact|disk ID``: disk maintenance on a running node.

The node is named by its id in a local cluster's ``cluster.json`` (``shardkv up``; ``--dir``,
default ``.shardkv``) or given by ``--url``. ``snapshot`` and ``compact`` call the node's
admin endpoints (``node/disk_admin.py``) with ``SHARDKV_ADMIN_TOKEN`` as the bearer token
when it is set, else signed with the cluster credential (the environment's, or the one
``shardkv up`` wrote into the cluster directory); while the call runs, a progress line
every second says how long it has run and what the node reports (to stderr, so ``--json``
output stays one document). ``disk`` prints the node's ``GET /v1/disk``. Exit status: 0
done, 1 the node refused or failed, 2 a mistake in the command (unknown id, no
cluster.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from shardkv.cluster import event_loop
from shardkv.cluster.cluster_credentials import TOKEN_FILE
from shardkv.cluster.cluster_token import ADMIN_TOKEN_ENV, CLUSTER_TOKEN_FILE_ENV, cluster_token
from shardkv.cluster.peer_auth import OPERATOR, signed_headers
from yarl import URL

ACTIONS = {
    "snapshot": ("POST", "/admin/snapshot", "take a snapshot now and trim the WAL behind it"),
    "compact": ("POST", "/admin/compact", "give the SQLite engine's free pages back (VACUUM)"),
    "disk": ("GET", "/v1/disk", "show disk use: WAL, snapshots, engine, free space, guard"),
}
PROGRESS_EVERY_S = 1.0


class UsageError(Exception):
    """A mistake in how the command was called: exit status 2."""


def add_actions(actions: argparse._SubParsersAction) -> None:
    for name, (_method, _path, help_text) in ACTIONS.items():
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("target", nargs="?", metavar="ID", help="the node's id in cluster.json")
        p.add_argument("--url", help="the node's URL (instead of an id)")
        p.add_argument("--dir", default=".shardkv", help="the local cluster's directory, "
                       "where cluster.json is (default .shardkv)")
        p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait "
                       "(default 600)")
        p.add_argument("--json", action="store_true", help="print the answer as JSON")


def node_url(target: str | None, url: str | None, directory: Path) -> str:
    """The URL of node ``target`` in ``directory/cluster.json``, or ``url``."""
    if url:
        return url.rstrip("/")
    if not target:
        raise UsageError("name a node: shardkv node snapshot ID (or --url URL)")
    described = directory / "cluster.json"
    try:
        nodes = json.loads(described.read_text())["nodes"]
    except FileNotFoundError:
        raise UsageError(f"{described} does not exist: start a cluster with `shardkv up` "
                         "or pass --url") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{described} is not a cluster description: {exc}") from None
    for node in nodes:
        if node.get("id") == target:
            return str(node["url"]).rstrip("/")
    known = ", ".join(str(n.get("id")) for n in nodes)
    raise UsageError(f"no node {target!r} in {described} (nodes: {known})")


def _headers(method: str, path: str) -> dict[str, str]:
    """The operator's admin token as a bearer token when set; otherwise a request signed with
    the cluster credential (``SHARDKV_CLUSTER_TOKEN[_FILE]``); neither on an open cluster."""
    token = os.environ.get(ADMIN_TOKEN_ENV)
    auth = ({"Authorization": f"Bearer {token}"} if token
            else signed_headers(method, path, b"", OPERATOR))
    return {**auth, "Accept": "application/json"}


async def _call(session: aiohttp.ClientSession, method: str, url: str) -> tuple[int, Any]:
    headers = _headers(method, URL(url).raw_path_qs)
    async with session.request(method, url, headers=headers) as resp:
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw) if raw else {}
        except ValueError:
            return resp.status, {"error": "INTERNAL", "message": raw[:200].decode(errors="replace")}


async def _progress(session: aiohttp.ClientSession, base: str, action: str) -> None:
    """Every second: elapsed time and the node's own view of the running work."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        try:
            _status, disk = await _call(session, "GET", f"{base}/v1/disk")
            running = (disk.get("compaction", {}) if action == "compact"
                       else disk.get("snapshot", {})).get("running")
            extra = (f"running={running} wal={disk['wal']['retained_bytes']}B "
                     f"engine={disk['engine_bytes']}B free={disk['free_bytes']}B")
        except (aiohttp.ClientError, KeyError, TypeError, AttributeError):
            extra = "(no answer from /v1/disk)"
        print(f"{action}: {time.monotonic() - started:.0f}s {extra}", file=sys.stderr,
              flush=True)


async def run_action(action: str, base: str, within_s: float) -> tuple[int, Any]:
    method, path, _help = ACTIONS[action]
    client_timeout = aiohttp.ClientTimeout(total=within_s)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        ticker = asyncio.create_task(_progress(session, base, action)) if method == "POST" \
            else None
        try:
            return await _call(session, method, f"{base}{path}")
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)


def _use_local_credential(directory: Path) -> None:
    """On a cluster from ``shardkv up``, sign with the credential it generated
    (``DIR/cluster.token``) unless the environment names one."""
    token_file = directory / TOKEN_FILE
    if cluster_token() is None and token_file.is_file():
        os.environ[CLUSTER_TOKEN_FILE_ENV] = str(token_file)


def _render(action: str, body: dict[str, Any]) -> str:
    if action == "snapshot":
        return (f"snapshot at lsn {body['lsn']}: {body['keys']} keys, {body['bytes']} bytes in "
                f"{body['seconds']}s; WAL now {body['wal_bytes_after']} bytes "
                f"({body['wal_segments_removed']} segments removed)\n")
    if action == "compact":
        return (f"compacted: {body['bytes_before']} -> {body['bytes_after']} bytes "
                f"({body['reclaimed_bytes']} reclaimed, free pages {body['free_pages_before']}"
                f" -> {body['free_pages_after']}) in {body['seconds']}s\n")
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in body.items())


def run(args: argparse.Namespace) -> int:
    action = args.node_action
    try:
        base = node_url(args.target, args.url, Path(args.dir))
    except UsageError as exc:
        print(f"shardkv node {action}: {exc}", file=sys.stderr)
        return 2
    _use_local_credential(Path(args.dir))
    try:
        status, body = event_loop.run(run_action(action, base, args.timeout))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"shardkv node {action}: cannot reach {base}: {exc or type(exc).__name__}",
              file=sys.stderr)
        return 1
    if status != 200:
        print(f"shardkv node {action}: {body.get('error')}: {body.get('message')}",
              file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(body) + "\n" if args.json else _render(action, body))
    return 0
