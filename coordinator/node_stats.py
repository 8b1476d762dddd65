"""``node.stats`` samples for the coordinators' event feed (and the dashboard's charts).

While at least one feed asks for ``stats``, one task per coordinator reads every node's
public ``/v1/status`` and ``/metrics`` each ``INTERVAL_S`` (1 s) and sends one ``node.stats`` event
per node to those feeds: its state, role, epoch, last LSN, keys, operations per second and
the 99th percentile of operation latency over the interval (from the deltas of the node's
``shardkv_ops_total`` counter and ``shardkv_op_duration_seconds`` histogram), and its lag in
LSN behind its shard's primary. No feed asking, no polling: the nodes never pay for a
dashboard nobody is looking at. Samples are not kept in the event history (they are
replaced by the next one).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from shardkv.coordinator.cluster_events import Event
from shardkv.coordinator.event_log import Subscription
from shardkv.coordinator.feed_poller import FeedPoller

INTERVAL_S = 1.0
MAX_METRICS_BYTES = 4 << 20


@dataclass(slots=True)
class Counters:
    """What one scrape of a node's /metrics contributes: op count and latency buckets."""

    ops: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative


def parse_metrics(text: str) -> Counters:
    out = Counters()
    for family in text_string_to_metric_families(text):
        if family.name == "shardkv_ops":
            out.ops += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "shardkv_op_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels.get("le", "inf"))
                    out.buckets[bound] = out.buckets.get(bound, 0.0) + sample.value
    return out


def quantile_from_buckets(before: dict[float, float], now: dict[float, float],
                          q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the observations made
    between two scrapes (None when there were none). Bucket bounds are what the node
    exports, so this is an upper estimate, as Prometheus' histogram_quantile is."""
    deltas = sorted((bound, now[bound] - before.get(bound, 0.0)) for bound in now)
    if not deltas or deltas[-1][1] <= 0:
        return None
    total = deltas[-1][1]
    for bound, count in deltas:
        if count >= q * total:
            return bound if math.isfinite(bound) else deltas[-2][0] if len(deltas) > 1 \
                else None
    return None


def node_sample(node_id: str, info: dict[str, Any], status: dict[str, Any] | None,
                before: tuple[float, Counters] | None, now: tuple[float, Counters] | None,
                ) -> Event:
    ops_s = p99_ms = None
    if before is not None and now is not None and now[0] > before[0]:
        ops_s = round(max(0.0, now[1].ops - before[1].ops) / (now[0] - before[0]), 1)
        p99 = quantile_from_buckets(before[1].buckets, now[1].buckets, 0.99)
        p99_ms = None if p99 is None else round(p99 * 1000, 3)
    status = status or {}
    return {"type": "node.stats", "node": node_id, "shard": info.get("shard"),
            "role": status.get("role", info.get("role")),
            "state": status.get("state", "unreachable" if not status else None),
            "epoch": status.get("epoch"), "last_lsn": status.get("last_lsn"),
            "keys": status.get("keys"), "ops_s": ops_s, "p99_ms": p99_ms, "lag": None,
            "time": round(time.time(), 3)}


def fill_lag(samples: list[Event]) -> None:
    """Each member's LSN lag behind its shard's primary (as sampled in the same round)."""
    primaries = {s["shard"]: s["last_lsn"] for s in samples
                 if s["role"] == "primary" and isinstance(s["last_lsn"], int)}
    for s in samples:
        head = primaries.get(s["shard"])
        if head is not None and isinstance(s["last_lsn"], int):
            s["lag"] = max(0, head - s["last_lsn"])


class NodeStatsSampler:
    """One polling task per coordinator, running only while a subscriber wants stats."""

    def __init__(self, nodes: Any, interval_s: float = INTERVAL_S) -> None:
        self._nodes = nodes  # () -> {node_id: {"url", "shard", "role", ...}}
        self.interval_s = interval_s
        self.subscribers: set[Subscription] = set()
        self._poller = FeedPoller(self._run, "node-stats")
        self._previous: dict[str, tuple[float, Counters]] = {}

    def add(self, sub: Subscription) -> None:
        self.subscribers.add(sub)
        self._poller.wake()

    def remove(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    async def close(self) -> None:
        await self._poller.close()

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(1.0, self.interval_s))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while self.subscribers:
                started = time.monotonic()
                nodes = self._nodes()
                samples = await asyncio.gather(*(
                    self._sample(session, node_id, info) for node_id, info in nodes.items()))
                fill_lag(samples)
                for sample in samples:
                    for sub in list(self.subscribers):
                        if not sub.offer(sample):
                            self.subscribers.discard(sub)
                await asyncio.sleep(max(0.1, self.interval_s - (time.monotonic() - started)))
        self._previous.clear()

    async def _sample(self, session: aiohttp.ClientSession, node_id: str,
                      info: dict[str, Any]) -> Event:
        url = str(info.get("url", ""))
        status: dict[str, Any] | None = None
        counters: tuple[float, Counters] | None = None
        try:
            async with session.get(f"{url}/v1/status") as resp:
                if resp.status == 200:
                    body = await resp.json()
                    status = body if isinstance(body, dict) else None
            async with session.get(f"{url}/metrics") as resp:
                text = (await resp.content.read(MAX_METRICS_BYTES)).decode(errors="replace")
                counters = (time.monotonic(), parse_metrics(text))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            pass
        before = self._previous.get(node_id)
        if counters is not None:
            self._previous[node_id] = counters
        return node_sample(node_id, info, status, before, counters)
