"""The key watch delivered every acknowledged write exactly once, per key in write order.

Input: the writes the workload made (key, value, shard, version when acknowledged, or
``None`` when the outcome is unknown) and the events one watch received (key, value,
version, shard, type). Anomalies:

- ``missing``: an acknowledged write with no event (a gap);
- ``duplicate``: the same (key, version) delivered twice;
- ``phantom``: an event no write explains (not acknowledged, not of unknown outcome);
- ``mismatch``: an event at an acknowledged write's version and key with another value;
- ``order``: a key's events out of version order.

Writes of unknown outcome may or may not appear; ``stats`` counts how many did.

A write is named by (key, version), not by its shard: a key's versions only grow, even when
resharding moves it (the new owner writes above every version the old one gave it), so the
pair names one write wherever it was made, and a workload does not have to know which shard
took a write that crossed a flip. The shard is reported with an anomaly.
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
    acked = {(w.key, w.version): w for w in writes if w.version is not None}
    unknown = {(w.key, w.value) for w in writes if w.version is None}
    delivered = Counter((e.key, e.version) for e in events)
    shards = {(e.key, e.version): e.shard for e in events}
    for where, times in delivered.items():
        if times > 1:
            result.anomaly("duplicate", where[0], f"delivered {times} times",
                           shard=shards[where], version=where[1])
    seen = {(e.key, e.version): e for e in events}
    for where, write in acked.items():
        event = seen.get(where)
        if event is None:
            result.anomaly("missing", write.key, "acknowledged write never delivered",
                           shard=write.shard, version=write.version)
        elif event.value != write.value or (event.type == "put") != (write.value is not None):
            result.anomaly("mismatch", write.key, "delivered with another value or type",
                           shard=write.shard, version=write.version)
    extra = [e for e in events if (e.key, e.version) not in acked]
    explained: Counter[tuple[bytes, bytes | None]] = Counter()
    for event in extra:
        made = (event.key, event.value if event.type == "put" else None)
        if made not in unknown:
            result.anomaly("phantom", event.key, "an event no write explains",
                           shard=event.shard, version=event.version)
        elif made[1] is not None:
            # Values are unique: a write of unknown outcome shows at most once (a second
            # time, at another version, would be a migration's copy of it).
            explained[made] += 1
            if explained[made] == 2:
                result.anomaly("duplicate", event.key, "a write of unknown outcome "
                               "delivered twice", shard=event.shard, version=event.version)
    last: dict[bytes, int] = {}
    for event in events:
        if event.version < last.get(event.key, -1):
            result.anomaly("order", event.key, "events out of version order",
                           version=event.version, after=last[event.key])
        last[event.key] = max(event.version, last.get(event.key, -1))
    result.stats = {"acknowledged": len(acked), "events": len(events),
                    "unknown_outcome_delivered": len(extra)}
    return result
