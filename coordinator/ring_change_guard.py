"""Refuse a raw ring change (``PUT /admin/ring``) that would strand data.

Adding a shard goes through an online migration (docs/resharding.md), which moves the keys;
a raw ring change moves none. Changing the ring (a weight, a shard taken out) changes the owner
of about 1/N of the keys. Without a migration that copies those keys to their new owner, they
stay on the old owner, which now answers ``STALE_MAP`` for them, while the new owner answers
``NOT_FOUND``: acknowledged data becomes unreachable. So the admin API asks every shard's
primary how many keys it holds before it proposes a ring change, and refuses the change when
any shard holds a key, or when it cannot tell (a primary that does not answer, a shard with
members but no primary): failing closed is the only safe answer to "does this hold data?".

The check runs before the proposal, not inside the Raft state machine (which must stay a pure
function of the map): a write that lands between the check and the commit of the new ring is
possible in principle; the window is one round trip to each primary, on a cluster that held no
key an instant before. An empty cluster (just bootstrapped, nothing written yet) may still be
reshaped freely.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import Unavailable, VersionMismatch

STATUS_TIMEOUT_S = 2.0


async def _keys_held(session: aiohttp.ClientSession, url: str) -> int | None:
    """The primary's key count from ``GET /v1/status``, or None if it cannot be had."""
    try:
        async with session.get(f"{url}/v1/status") as resp:
            if resp.status != 200:
                return None
            body: Any = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    keys = body.get("keys") if isinstance(body, dict) else None
    return keys if isinstance(keys, int) and not isinstance(keys, bool) else None


async def keys_per_shard(cluster_map: ClusterMap) -> dict[str, int | None]:
    """Per shard: the keys its primary holds, 0 for a shard no node serves yet, None when
    it cannot be known."""
    counts: dict[str, int | None] = {}
    asks: dict[str, str] = {}
    for shard_id, shard in sorted(cluster_map.shards.items()):
        primary = cluster_map.primary_of(shard_id)
        if primary is not None:
            asks[shard_id] = primary.url
        else:
            # No member: no node has ever written for it. Members without a primary may
            # hold data that no one can vouch for right now.
            counts[shard_id] = 0 if not shard.members else None
    if asks:
        timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            answers = await asyncio.gather(*(_keys_held(session, url) for url in asks.values()))
        counts.update(zip(asks, answers, strict=True))
    return counts


async def refuse_ring_change_over_data(cluster_map: ClusterMap, what: str) -> None:
    """Raise unless every shard is known to hold no key. ``what`` names the change refused."""
    counts = await keys_per_shard(cluster_map)
    unknown = sorted(sid for sid, n in counts.items() if n is None)
    holding = {sid: n for sid, n in sorted(counts.items()) if n}
    if holding:
        raise VersionMismatch(
            f"{what} refused: shards {', '.join(holding)} hold data, and changing the ring "
            f"would strand the keys that change owner. Add shards with POST /admin/shards "
            f"(an online migration, docs/resharding.md), or reshape the cluster before "
            f"writing to it.",
            keys_per_shard=holding,
        )
    if unknown:
        raise Unavailable(
            f"{what} refused: cannot tell whether shards {', '.join(unknown)} hold data "
            f"(no primary, or the primary did not answer GET /v1/status); a ring change "
            f"could strand their keys",
            shards_unknown=unknown,
        )
