"""Bounded staleness: every eventual read returned a state no older than its bound.

Replica reads are not linearizable and are not checked as such. What shardkv promises for
``get(consistency="eventual", max_staleness_ms=B)`` is that the member which answers holds
everything the primary held B milliseconds before it answered. The rule, with every time on
the workload's one monotonic clock:

- A read R is invoked at ``c`` and completes at ``r``; the member answers at some ``t`` in
  ``[c, r]``. An acknowledged write W completed at ``W.ret``, and the primary held it durably
  no later than that. If ``W.ret < c - B`` then ``W.ret < t - B`` whatever ``t`` is, so the
  member must hold W or something newer, i.e. R's version must be at least W's version.
  Writes acknowledged after ``c - B`` may or may not be visible: no constraint.
- Equivalently, for the version V that R returned, let ``superseded_at`` be the earliest
  completion of an acknowledged write with a version above V: the moment the primary is
  known to have held something newer than what R saw. R's *lag* is
  ``c - superseded_at``; R is stale iff ``lag > B + slack``. The lag is reported for every read
  as a figure even when within bounds.
- An absent answer has the version of the newest delete that could explain it (an info
  delete invoked before ``r`` explains any absence); with no delete it is the initial version 0.
- A read must not come from the future either: its value must have been written by some write
  invoked before ``r`` (any outcome but fail), and a version equal to an acknowledged write's
  must carry that write's value.

``slack_ms`` absorbs the difference between this clock and the staleness estimate the nodes
make from the primary's heartbeats; it defaults to 0, so a report says which slack it used.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.history import INFINITY, Operation

_WRITES = frozenset({"write", "cas", "delete"})


def _written_value(op: Operation) -> Any:
    if op.f == "cas":
        return op.value[1]
    return None if op.f == "delete" else op.value


class _KeyLog:
    """The acknowledged writes of one key, sorted by version, with suffix minima of their
    completion times (the earliest moment something above a version was known durable)."""

    def __init__(self, writes: list[Operation]) -> None:
        acked = sorted(
            (w for w in writes if w.type == "ok" and w.version is not None),
            key=lambda w: w.version or 0,
        )
        self.versions = [w.version or 0 for w in acked]
        self.by_version = {w.version: w for w in acked}
        self.suffix_min_ret = [INFINITY] * (len(acked) + 1)
        for i in range(len(acked) - 1, -1, -1):
            self.suffix_min_ret[i] = min(acked[i].ret, self.suffix_min_ret[i + 1])
        # Deletes by invocation time, with the running answer "what absence can stand for".
        deletes = sorted((w for w in writes if w.f == "delete"), key=lambda w: w.call)
        self.delete_calls = [w.call for w in deletes]
        self.absence_version: list[float] = [0]
        for w in deletes:
            unknown = w.type == "info" or w.version is None
            self.absence_version.append(
                INFINITY if unknown else max(self.absence_version[-1], w.version or 0)
            )
        # Writes of each value, by invocation time.
        self.by_value: dict[Any, list[Operation]] = defaultdict(list)
        for w in sorted(writes, key=lambda w: w.call):
            self.by_value[_freeze(_written_value(w))].append(w)

    def absent_version(self, before: float) -> float:
        """The newest version an absence may stand for, given deletes invoked by ``before``."""
        return self.absence_version[bisect.bisect_right(self.delete_calls, before)]

    def writes_of(self, value: Any, before: float) -> list[Operation]:
        """Writes of ``value`` invoked by ``before``."""
        return [w for w in self.by_value.get(_freeze(value), ()) if w.call <= before]

    def superseded_at(self, version: float) -> float:
        """Earliest completion of an acknowledged write with a version above ``version``."""
        if version == INFINITY:
            return INFINITY
        return self.suffix_min_ret[bisect.bisect_right(self.versions, version)]


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def check_staleness(ops: Iterable[Operation], *, slack_ms: float = 0.0) -> CheckResult:
    ops = list(ops)
    result = CheckResult("staleness")
    writes: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.f in _WRITES and op.type != "fail":
            writes[op.key].append(op)
    logs = {key: _KeyLog(ws) for key, ws in writes.items()}
    empty = _KeyLog([])
    lags_ms: list[float] = []
    checked = 0
    for read in ops:
        if not (read.f == "read" and read.type == "ok" and read.consistency == "eventual"):
            continue
        if read.max_staleness_ms is None:
            continue
        checked += 1
        log = logs.get(read.key, empty)
        version = _effective_version(result, read, log)
        if version is None:
            continue
        lag_s = read.call - log.superseded_at(version)
        lag_ms = max(0.0, lag_s * 1000.0)
        lags_ms.append(lag_ms)
        if lag_ms > read.max_staleness_ms + slack_ms:
            result.anomaly(
                "stale-read", read.key,
                f"{read.describe()} saw version {version} although a newer write had been "
                f"acknowledged {lag_ms:.1f} ms before the read began "
                f"(bound {read.max_staleness_ms} ms + slack {slack_ms} ms)",
                read=read.to_json(), lag_ms=round(lag_ms, 3),
            )
    result.stats = {
        "eventual_reads_checked": checked,
        "slack_ms": slack_ms,
        "lag_ms_p50": _percentile(lags_ms, 0.5),
        "lag_ms_p99": _percentile(lags_ms, 0.99),
        "lag_ms_max": max(lags_ms, default=None),
    }
    return result


def _effective_version(result: CheckResult, read: Operation, log: _KeyLog) -> float | None:
    """The version a read's answer stands for, or None after reporting why it is invalid."""
    if read.output is None:
        return log.absent_version(read.ret)
    if read.version is not None and read.version in log.by_version:
        origin = log.by_version[read.version]
        if _written_value(origin) != read.output:
            result.anomaly(
                "corrupt-read", read.key,
                f"{read.describe()} returned version {read.version} with a value that "
                f"version was not written with ({_written_value(origin)!r})",
                read=read.to_json(),
            )
            return None
        if origin.call > read.ret:
            result.anomaly(
                "phantom-read", read.key,
                f"{read.describe()} returned a write invoked only after the read completed",
                read=read.to_json(),
            )
            return None
        return read.version
    same_value = log.writes_of(read.output, read.ret)
    if not same_value:
        result.anomaly(
            "phantom-read", read.key,
            f"{read.describe()} returned a value no write invoked before it wrote",
            read=read.to_json(),
        )
        return None
    if read.version is not None:
        return read.version
    # No version reported: the newest acknowledged write of that value bounds what it saw.
    candidates = [w.version for w in same_value if w.version is not None]
    return max(candidates, default=INFINITY)
