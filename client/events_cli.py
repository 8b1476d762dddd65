"""``shardkv events``: cluster events and every node's storage and replication events, one a
line (docs/events.md).

With ``--node URL`` it follows that one node; otherwise the cluster events of the
coordinators (``GET /v1/events`` on one of them; failovers, node up/down, ring and
membership changes, migration progress) and every node of the cluster map (the cluster found
as for the other data commands); ``--cluster-only`` leaves out the nodes. Each feed is read
by its own task; a feed that drops is reopened after a pause, a coordinator feed on the next
coordinator from the last map version seen (map versions are the same on every coordinator,
so nothing in the coordinators' kept history is missed). The coordinator feed is
authenticated with ``SHARDKV_ADMIN_TOKEN`` when set, else signed with the cluster credential
(``DIR/cluster.token`` of ``shardkv up``). Ctrl-C ends it (status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
from shardkv.client.async_client import Client
from shardkv.client.cli import _runner, add_target_arguments
from shardkv.cluster.cluster_credentials import TOKEN_FILE
from shardkv.cluster.cluster_token import ADMIN_TOKEN_ENV, cluster_token
from shardkv.cluster.errors import error_from_dict
from shardkv.cluster.peer_auth import OPERATOR, signed_headers

REOPEN_PAUSE_S = 1.0


async def _follow(session: aiohttp.ClientSession, url: str, query: str,
                  out: asyncio.Queue[dict[str, Any]]) -> None:
    while True:
        try:
            async with session.ws_connect(f"{url}/v1/events?{query}") as ws:
                async for msg in ws:
                    await out.put(json.loads(msg.data))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 400:  # a bad query: the plain answer says why; say it, stop
                async with session.get(f"{url}/v1/events?{query}") as answer:
                    await out.put({"error": error_from_dict(await answer.json())})
                return
        except (aiohttp.ClientError, OSError, ValueError):
            pass
        await asyncio.sleep(REOPEN_PAUSE_S)


def _cluster_auth(path_qs: str, directory: str) -> dict[str, str]:
    """The Authorization header for a coordinator feed (empty on an open cluster)."""
    admin = os.environ.get(ADMIN_TOKEN_ENV)
    if admin:
        return {"Authorization": f"Bearer {admin}"}
    secret = cluster_token()
    token_file = Path(directory) / TOKEN_FILE
    if secret is None and token_file.is_file():
        secret = token_file.read_text().strip() or None
    return signed_headers("GET", path_qs, b"", OPERATOR, secret) if secret else {}


async def _follow_cluster(session: aiohttp.ClientSession, urls: list[str], directory: str,
                          since: int | None, types: str | None,
                          out: asyncio.Queue[dict[str, Any]]) -> None:
    """The coordinators' cluster events (after map version ``since`` first, when given),
    moving to the next coordinator when one drops."""
    turn = 0
    while True:
        url = urls[turn % len(urls)]
        turn += 1
        query = "&".join(([f"since={since}"] if since is not None else [])
                         + ([f"types={types}"] if types else []))
        path = "/v1/events" + (f"?{query}" if query else "")
        try:
            async with session.ws_connect(f"{url}{path}",
                                          headers=_cluster_auth(path, directory)) as ws:
                async for msg in ws:
                    event = json.loads(msg.data)
                    if event.get("type") == "error":
                        if event.get("error") in ("UNAUTHORIZED", "FORBIDDEN"):
                            await out.put({"error": error_from_dict(event)})
                            return
                        break
                    version = event.get("map_version")
                    if event.get("type") == "cluster.snapshot":
                        since = version if since is None else since
                        continue  # the state, not a change: `shardkv status` shows it
                    if isinstance(version, int):
                        since = max(since or 0, version)
                    await out.put(event)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (400, 401, 403):
                async with session.get(f"{url}{path}",
                                       headers=_cluster_auth(path, directory)) as answer:
                    await out.put({"error": error_from_dict(await answer.json())})
                return
        except (aiohttp.ClientError, OSError, ValueError):
            pass
        await asyncio.sleep(REOPEN_PAUSE_S)


async def _events(kv: Client, args: argparse.Namespace) -> int:
    coordinators: list[str] = []
    if args.node:
        urls = [args.node]
    else:
        cmap = kv.cluster_map
        urls = sorted(n.url for n in cmap.nodes.values()) if cmap is not None else []
        coordinators = list(kv.coordinator_urls)
        if args.cluster_only:
            urls = []
    query = f"interval_ms={args.interval_ms}"
    if args.categories:
        query += f"&categories={args.categories}"
    out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1024)
    shown = 0
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(_follow(session, url, query, out)) for url in urls]
        if coordinators:
            tasks.append(asyncio.create_task(
                _follow_cluster(session, coordinators, args.dir, args.since, args.types, out)))
        try:
            while args.count is None or shown < args.count:
                event = await out.get()
                if "error" in event:
                    raise event["error"]
                if args.json:
                    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
                else:
                    rest = {k: v for k, v in event.items() if k not in ("type", "node")}
                    sys.stdout.write(f"{event['type']} {event.get('node') or ''} {rest}\n")
                sys.stdout.flush()
                shown += 1
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def _args_events(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("--interval-ms", type=int, default=1000,
                   help="sampling interval (100 to 60000, default 1000)")
    p.add_argument("--categories", default=None, help="storage,replication (default both)")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N events")
    p.add_argument("--since", type=int, default=None, metavar="MAP_VERSION",
                   help="first replay the cluster events of maps newer than this version "
                   "(as far as the coordinators keep them: their last 1,000 events)")
    p.add_argument("--types", default=None, metavar="TYPE[,TYPE]",
                   help="only these cluster event types (shard.failover, node.down, ...)")
    p.add_argument("--cluster-only", action="store_true",
                   help="only the coordinators' cluster events, not the nodes' samples")


COMMANDS = [
    ("events", "cluster events, and storage and replication events of every node, one a line "
               "(docs/events.md)",
     _args_events, _runner(_events)),
]
