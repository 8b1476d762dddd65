"""The key watch delivered every acknowledged write exactly once, per key in write order.

Input: the writes the workload made (key, value, shard, version when acknowledged, or
``None`` when the outcome is unknown) and the events one watch received (key, value,
version, shard, type). Anomalies:

- ``missing``: an acknowledged write with no event (a gap);
- ``duplicate``: the same (shard, version, key) delivered twice;
- ``phantom``: an event no write explains (not acknowledged, not of unknown outcome);
- ``mismatch``: an event at an acknowledged write's (shard, version) and key with another
  value;
- ``order``: a key's events out of version order.

Writes of unknown outcome may or may not appear; ``stats`` counts how many did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from shardkv.chaos.checkers.result import CheckResult


@dataclass(frozen=True, slots=True)
class WatchedWrite:
    key: bytes
    value: bytes | None  # None: a delete
    shard: str
    version: int | None  # None: the outcome is unknown


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    key: bytes
    value: bytes | None
    version: int
    shard: str
    type: str


def check_watch_events(writes: Iterable[WatchedWrite],
                       events: Iterable[ReceivedEvent]) -> CheckResult:
    result = CheckResult("watch-events")
    writes = list(writes)
    events = list(events)
    acked = {(w.shard, w.version, w.key): w for w in writes if w.version is not None}
    unknown = {(w.key, w.value) for w in writes if w.version is None}
    delivered = Counter((e.shard, e.version, e.key) for e in events)
    for where, times in delivered.items():
        if times > 1:
            result.anomaly("duplicate", where[2], f"delivered {times} times", shard=where[0],
                           version=where[1])
    seen = {(e.shard, e.version, e.key): e for e in events}
    for where, write in acked.items():
        event = seen.get(where)
        if event is None:
            result.anomaly("missing", write.key, "acknowledged write never delivered",
                           shard=write.shard, version=write.version)
        elif event.value != write.value or (event.type == "put") != (write.value is not None):
            result.anomaly("mismatch", write.key, "delivered with another value or type",
                           shard=write.shard, version=write.version)
    extra = [e for e in events if (e.shard, e.version, e.key) not in acked]
    for event in extra:
        if (event.key, event.value if event.type == "put" else None) not in unknown:
            result.anomaly("phantom", event.key, "an event no write explains",
                           shard=event.shard, version=event.version)
    last: dict[bytes, int] = {}
    for event in events:
        if event.version < last.get(event.key, -1):
            result.anomaly("order", event.key, "events out of version order",
                           version=event.version, after=last[event.key])
        last[event.key] = max(event.version, last.get(event.key, -1))
    result.stats = {"acknowledged": len(acked), "events": len(events),
                    "unknown_outcome_delivered": len(extra)}
    return result
