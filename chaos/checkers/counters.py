"""Counters: no acknowledged increment lost, none applied twice.

For each counter key, with ``acked`` the sum of acknowledged deltas and the info increments
(unknown outcome) each contributing either 0 or its delta (once: never twice), the final
strong read F must be exactly ``acked`` plus the deltas of some subset of the info increments.
No range slack: with no info increment F must equal ``acked`` (the default client, retries on,
leaves few or none: an increment it reports ``ok`` or ``fail`` after retries must have been
applied exactly once or not at all). Below every reachable value an acknowledged increment
was lost; above, one was applied twice (a retried request executed again, the classic bug of
non-idempotent retries); in between but unreachable, the deltas do not add up either way.

Each acknowledged incr also returns the counter's new value; with positive deltas those
values must be distinct (two increments cannot both have produced the same value), and none
may exceed what all increments invoked before it returned could produce.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from shardkv.chaos.checkers.lost_writes import final_reads
from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.history import Operation


def _delta(op: Operation) -> int:
    return int(op.value) if op.value is not None else 1


def check_counters(ops: Iterable[Operation]) -> CheckResult:
    ops = list(ops)
    result = CheckResult("counters")
    finals = final_reads(ops)
    incrs: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.f == "incr" and op.type != "fail":
            incrs[op.key].append(op)
    for key, key_incrs in sorted(incrs.items(), key=lambda kv: str(kv[0])):
        acked = [op for op in key_incrs if op.type == "ok"]
        unknown = [op for op in key_incrs if op.type == "info"]
        low = sum(_delta(op) for op in acked) + sum(min(0, _delta(op)) for op in unknown)
        high = sum(_delta(op) for op in acked) + sum(max(0, _delta(op)) for op in unknown)
        _check_returned_values(result, key, key_incrs, acked)
        final = finals.get(key)
        if final is None:
            result.unknown("no-final-read", key, f"{len(acked)} acknowledged increments, "
                           "no final read")
            continue
        value = int(final.output or 0)
        acked_sum = sum(_delta(op) for op in acked)
        if low <= value <= high and not _reachable(value - acked_sum,
                                                   [_delta(op) for op in unknown]):
            result.anomaly(
                "unexplained-count", key,
                f"final value {value} is not {acked_sum} (the acknowledged increments) plus "
                f"any subset of the {len(unknown)} unknown ones",
                final=value, low=low, high=high,
            )
        if value < low:
            result.anomaly(
                "lost-increment", key,
                f"final value {value} is below {low}: at least {low - value} acknowledged "
                f"increment(s) lost ({len(acked)} acknowledged, {len(unknown)} unknown)",
                final=value, low=low, high=high,
            )
        elif value > high:
            result.anomaly(
                "doubled-increment", key,
                f"final value {value} is above {high}: {value - high} more than every "
                f"acknowledged and unknown increment together",
                final=value, low=low, high=high,
            )
    result.stats = {
        "counters": len(incrs),
        "acknowledged_increments": sum(
            1 for ops_ in incrs.values() for op in ops_ if op.type == "ok"
        ),
        "unknown_increments": sum(1 for ops_ in incrs.values() for op in ops_ if op.type == "info"),
    }
    return result


def _reachable(target: int, deltas: list[int], limit: int = 200_000) -> bool:
    """Whether some subset of ``deltas`` sums to ``target`` (each used at most once).
    Past ``limit`` distinct sums the answer is True (the range check still applies): a run
    with that many unknown increments cannot be judged exactly."""
    sums = {0}
    for d in deltas:
        sums |= {s + d for s in sums}
        if len(sums) > limit:
            return True
    return target in sums


def _check_returned_values(
    result: CheckResult, key: Any, all_incrs: list[Operation], acked: list[Operation]
) -> None:
    if any(_delta(op) <= 0 for op in all_incrs):
        return  # distinctness only holds for strictly growing counters
    seen = Counter(op.output for op in acked if op.output is not None)
    for value, count in seen.items():
        if count > 1:
            result.anomaly(
                "duplicate-increment-result", key,
                f"{count} acknowledged increments all returned {value}",
                value=value,
            )
    # What every increment invoked before time t could produce: a prefix sum over the
    # increments in call order, looked up by bisection (a pairwise sum is quadratic, minutes
    # for the tens of thousands of increments of a long run).
    by_call = sorted(all_incrs, key=lambda o: o.call)
    calls = [o.call for o in by_call]
    prefix = list(itertools.accumulate((_delta(o) for o in by_call), initial=0))
    for op in acked:
        if op.output is None:
            continue
        possible = prefix[bisect.bisect_right(calls, op.ret)]
        if int(op.output) > possible:
            result.anomaly(
                "doubled-increment", key,
                f"{op.describe()} returned {op.output}, more than the {possible} that every "
                "increment invoked before it returned could produce",
                op=op.to_json(),
            )
