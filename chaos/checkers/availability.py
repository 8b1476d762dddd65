"""Availability figures: fraction of operations answered per phase, latency percentiles,
and failover durations, from the operations and the nemesis log.

Phases come from the nemesis log: a fault's window runs from its ``start`` to its ``stop``
(or to a ``heal``, or to the end of the run). An operation belongs to the phase in which it
was invoked; ``steady`` is outside every window.

An operation is *answered* if it is ok or a definite fail the store chose to give
(VERSION_MISMATCH, NOT_FOUND, INVALID_ARGUMENT, TOO_LARGE); timeouts, UNAVAILABLE, NOT_PRIMARY
after retries, dropped connections (info) are not.

Failover duration of a fault: for each key, the first operation invoked after the fault began
that was not answered marks the key as affected; the key is back at the completion of its
next ok operation. The fault's failover duration is the longest of those, measured from the
fault's start (0 when no key was affected; ``None`` when some key never recovered). A key
the workload stopped using before the fault ended (workloads move on to fresh keys) has no
later operation to measure recovery by: it is counted as ``abandoned_keys``, not as a key
that never recovered. "Later" means after the fault's window *and* after the first affected
key was back: a restart is stopped (its undo issued) before the node has replayed its WAL,
and a key left in that gap was never seen either way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.history import INFINITY, NemesisEvent, Operation

DEFINITE_ANSWERS = frozenset({"VERSION_MISMATCH", "NOT_FOUND", "INVALID_ARGUMENT", "TOO_LARGE"})


@dataclass(frozen=True)
class FaultWindow:
    fault: str
    targets: tuple[str, ...]
    start: float
    end: float

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end


def fault_windows(events: Iterable[NemesisEvent], run_end: float) -> list[FaultWindow]:
    """Pair each start with the next stop of the same fault and targets (or a heal)."""
    open_: dict[tuple[str, tuple[str, ...]], float] = {}
    windows: list[FaultWindow] = []
    for ev in sorted(events, key=lambda e: e.time):
        ident = (ev.fault, tuple(ev.targets))
        if ev.action == "start":
            open_.setdefault(ident, ev.time)
        elif ev.action == "stop":
            if ident in open_:
                windows.append(FaultWindow(ev.fault, ident[1], open_.pop(ident), ev.time))
            else:  # a stop naming no targets closes every window of that fault
                for other in [i for i in open_ if i[0] == ev.fault]:
                    windows.append(FaultWindow(ev.fault, other[1], open_.pop(other), ev.time))
        else:  # heal closes everything
            for other in list(open_):
                windows.append(FaultWindow(other[0], other[1], open_.pop(other), ev.time))
    for ident, start in open_.items():
        windows.append(FaultWindow(ident[0], ident[1], start, run_end))
    return sorted(windows, key=lambda w: w.start)


def answered(op: Operation) -> bool:
    return op.type == "ok" or (op.type == "fail" and (op.error or "") in DEFINITE_ANSWERS)


def percentiles_ms(latencies_s: list[float]) -> dict[str, float | None]:
    ordered = sorted(latencies_s)

    def pick(q: float) -> float | None:
        if not ordered:
            return None
        return round(1000 * ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": pick(1.0),
            "count": len(ordered)}


def _phase_stats(ops: list[Operation]) -> dict[str, Any]:
    total = len(ops)
    return {
        "operations": total,
        "ok": sum(1 for op in ops if op.type == "ok"),
        "answered_fraction": round(sum(map(answered, ops)) / total, 4) if total else None,
        "ok_fraction": round(sum(op.type == "ok" for op in ops) / total, 4) if total else None,
        "latency_ms": percentiles_ms([op.ret - op.call for op in ops if op.type == "ok"]),
    }


def check_availability(
    ops: Iterable[Operation], nemesis: Iterable[NemesisEvent] = ()
) -> CheckResult:
    """Figures only: the verdict is always ok (unavailability under faults is allowed;
    thresholds, if any, belong to a scenario)."""
    ops = [op for op in ops if not op.final]
    result = CheckResult("availability")
    if not ops:
        return result
    origin = min(op.call for op in ops)
    run_end = max(op.ret if op.ret != INFINITY else op.call for op in ops)
    windows = fault_windows(nemesis, run_end)
    phases: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        active = [w.fault for w in windows if w.contains(op.call)]
        phases["fault:" + "+".join(sorted(set(active))) if active else "steady"].append(op)
    by_key: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    failovers = [_failover(w, by_key, origin) for w in windows]
    result.stats = {
        "overall": _phase_stats(ops),
        "phases": {name: _phase_stats(phase_ops) for name, phase_ops in sorted(phases.items())},
        "failovers": failovers,
        "max_failover_s": max(
            (f["failover_s"] for f in failovers if f["failover_s"] is not None), default=None
        ),
        "unrecovered_faults": sum(1 for f in failovers if f["failover_s"] is None),
    }
    return result


def _failover(
    window: FaultWindow, by_key: dict[Any, list[Operation]], origin: float
) -> dict[str, Any]:
    affected: list[tuple[list[Operation], Operation | None]] = []
    for key_ops in by_key.values():
        first_bad = next(
            (op for op in key_ops if op.call >= window.start and not answered(op)), None
        )
        if first_bad is None or first_bad.call >= window.end:
            continue
        back = next(
            (op for op in key_ops if op.call >= first_bad.call and op.type == "ok"), None
        )
        affected.append((key_ops, back))
    # The service is back when the first affected key is: a fault's ``stop`` is when its undo
    # was issued (a restart still has to replay its WAL), so a key the workload left between
    # the stop and that moment was not measurably unrecovered either.
    backs = [back.ret for _, back in affected if back is not None]
    measurable_after = max(window.end, min(backs, default=window.end))
    worst: float | None = 0.0
    abandoned = 0
    for key_ops, back in affected:
        if back is None:
            if max(op.call for op in key_ops) < measurable_after:
                abandoned += 1  # no operation after the service came back: nothing to measure
                continue
            worst = None
            continue
        if worst is not None:
            worst = max(worst, back.ret - window.start)
    return {
        "fault": window.fault,
        "targets": list(window.targets),
        "start_s": round(window.start - origin, 4),
        "end_s": round(window.end - origin, 4) if window.end != INFINITY else None,
        "affected_keys": len(affected),
        "abandoned_keys": abandoned,
        "failover_s": None if worst is None else round(worst, 4),
    }
