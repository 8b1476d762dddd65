"""The ``switchover`` nemesis: a planned primary switchover while the replicas' acknowledgements
are delayed or withheld.

The window issue 18 found by hand: every replica holds the next entries durably but has not
acknowledged them (failpoint ``replica_before_ack``), and the coordinator moves the primary to
a replica (``POST /admin/shards/{shard}/failover``). The old primary is fenced with writes in
flight whose outcome it cannot know; a new primary that holds them commits them. A client that
retries such a write on the new primary applies it twice unless writes are deduplicated: what
the retries-on workloads are for.

``start(targets=[a primary], acks="pause" | "sleep(MS)" | "error", hold_s=S)``: arm the
failpoint with ``acks`` on every replica of the target's shard, let writes pile up for
``hold_s``, ask the coordinator leader for the switchover (to any replica it picks), then
disarm the replicas. ``pause`` withholds acknowledgements until the failpoint is disarmed,
``sleep`` delays each, ``error`` drops them (the replica's ack path fails). ``stop`` and
``heal_all`` disarm anything still armed; the switchover itself needs no undoing (the new
primary is as good a primary as the old one).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shardkv.chaos.nemesis.failpoint import http_put_text
from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.cluster.cluster_token import auth_headers

ACK_FAILPOINT = "replica_before_ack"


def http_post_json(url: str, body: dict[str, Any], timeout: float,
                   method: str = "POST") -> tuple[int, Any]:
    """(status, decoded JSON or text); status 0 when nothing answered. Blocking. ``method``:
    another verb with a JSON body (the resharding nemesis's DELETE and PUT)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json",
                                              **auth_headers()})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        return 0, str(exc)


class Switchover:
    """A planned switchover of the target primaries' shards under delayed acknowledgements."""

    def __init__(
        self,
        *,
        url_of: Callable[[str], str],
        cluster_map: Callable[[], Awaitable[dict[str, Any] | None]],
        name: str = "switchover",
    ) -> None:
        self.name = name
        self._url_of = url_of
        self._cluster_map = cluster_map
        self._armed: set[str] = set()

    async def _arm(self, node: str, action: str) -> None:
        url = f"{self._url_of(node)}/admin/failpoints/{ACK_FAILPOINT}"
        status, body = await asyncio.to_thread(http_put_text, url, action)
        if action != "off":
            if status != 200:
                raise NemesisError(f"arming {ACK_FAILPOINT}={action} on {node}: {status} {body}")
            self._armed.add(node)
        else:
            self._armed.discard(node)

    async def _disarm_all(self) -> None:
        for node in sorted(self._armed):
            await self._arm(node, "off")

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        acks = str(params.get("acks", "pause"))
        hold_s = float(params.get("hold_s", 0.5))
        cmap = await self._cluster_map() or {}
        leader = cmap.get("leader")
        if not leader:
            raise NemesisError("no coordinator leader in the map: cannot ask for a switchover")
        coordinator = self._url_of(str(leader))
        done: dict[str, Any] = {}
        try:
            for target in targets:
                shard = ((cmap.get("nodes") or {}).get(target) or {}).get("shard")
                members = ((cmap.get("shards") or {}).get(shard) or {}).get("members") or []
                replicas = [m for m in members if m != target]
                for replica in replicas:
                    await self._arm(replica, acks)
                await asyncio.sleep(hold_s)  # writes in flight: durable on replicas, unacked
                status, answer = await asyncio.to_thread(
                    http_post_json, f"{coordinator}/admin/shards/{shard}/failover",
                    {"catch_up_s": 5.0}, 10.0)
                done[str(shard)] = {"status": status, "answer": answer,
                                    "acks_held_on": replicas}
        finally:
            await self._disarm_all()
        return {"acks": acks, "hold_s": hold_s, "switchovers": done}

    async def stop(self) -> dict[str, Any]:
        await self._disarm_all()
        return {}

    async def heal_all(self) -> None:
        await self._disarm_all()
