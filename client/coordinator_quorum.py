"""Whether the coordinator group has a quorum, as ``shardkv status`` reports it.

The data plane does not need the coordinators (a primary is leased by its own shard's
majority, ``docs/replication.md``), but failover, ring and membership changes and
migrations do. So the status names the quorum plainly and says what still works without
it, instead of leaving an operator to infer it from timeouts. Each coordinator's
``GET /ready`` answers ``has_quorum`` (a 503 still carries the body).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from shardkv.cluster import wire

WITHOUT_QUORUM_WORKS = ("reads and writes on every shard whose primary holds its shard's "
                        "majority lease; clients route with their cached map")
WITHOUT_QUORUM_WAITS = "failover, ring and membership changes, migrations"


@dataclass(frozen=True, slots=True)
class CoordinatorQuorum:
    answering: int
    total: int
    has_quorum: bool
    leader: str | None

    def line(self) -> str:
        if self.has_quorum:
            return (f"coordinators: quorum ({self.answering} of {self.total} answer, "
                    f"leader {self.leader or '?'})")
        return (f"coordinators: no quorum ({self.answering} of {self.total} answer); still "
                f"working: {WITHOUT_QUORUM_WORKS}; waiting for a quorum: "
                f"{WITHOUT_QUORUM_WAITS}")

    def to_dict(self) -> dict[str, Any]:
        return {"answering": self.answering, "total": self.total,
                "has_quorum": self.has_quorum, "leader": self.leader,
                "without_quorum_works": WITHOUT_QUORUM_WORKS,
                "without_quorum_waits": WITHOUT_QUORUM_WAITS}


async def _ready(session: aiohttp.ClientSession, url: str,
                 within: float) -> dict[str, Any] | None:
    try:
        async with session.get(url.rstrip("/") + "/ready", headers={"Accept": wire.JSON},
                               timeout=aiohttp.ClientTimeout(total=within)) as resp:
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def probe_quorum(urls: list[str], *, within: float = 1.0) -> CoordinatorQuorum:
    """Ask every coordinator at once; a quorum is seen when one answering member sees it."""
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(_ready(session, u, within) for u in urls))
    answered = [a for a in answers if a is not None]
    with_quorum = [a for a in answered if a.get("has_quorum")]
    leader = next((str(a["leader"]) for a in with_quorum if a.get("leader")), None)
    return CoordinatorQuorum(len(answered), len(urls), bool(with_quorum), leader)
