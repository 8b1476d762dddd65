"""``shardkv events``: the storage and replication events of every node, one a line.

With ``--node URL`` it follows that one node; otherwise every node of the cluster map (the
cluster found as for the other data commands). Each node's ``GET /v1/events`` feed is read
by its own task; a feed that drops is reopened after a pause. Ctrl-C ends it (status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

import aiohttp
from shardkv.client.async_client import Client
from shardkv.client.cli import _runner, add_target_arguments
from shardkv.cluster.errors import error_from_dict

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


async def _events(kv: Client, args: argparse.Namespace) -> int:
    if args.node:
        urls = [args.node]
    else:
        cmap = kv.cluster_map
        urls = sorted(n.url for n in cmap.nodes.values()) if cmap is not None else []
    query = f"interval_ms={args.interval_ms}"
    if args.categories:
        query += f"&categories={args.categories}"
    out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1024)
    shown = 0
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(_follow(session, url, query, out)) for url in urls]
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


COMMANDS = [
    ("events", "storage and replication events of every node, one a line (docs/events.md)",
     _args_events, _runner(_events)),
]
