"""No acknowledged write may be lost: every one is visible in the final strong reads.

After every fault is healed and the cluster has settled, the runner reads every key it wrote
with a strong read (operations marked ``final``). Then, per key:

- register keys (``write``/``cas``/``delete``): an acknowledged write that began after
  another had been acknowledged must have a higher version (versions of a key only grow); a
  lower one means the node no longer had the earlier write when it ran the later (it was
  forgotten, even if the final version is higher again: a node that lost its tail hands the
  lost versions out again). The final version must be at least the version
  of every acknowledged write, since versions only grow. An equal version must carry that
  write's value (else the data was corrupted). An absent key is explained only by a delete,
  acknowledged with a higher version or of unknown outcome. A final value no write produced is
  a phantom.
- ``append`` keys: every acknowledged element appears in the final list, exactly once; an
  element no append wrote is a phantom.
- ``add`` keys (sets): every acknowledged element is in the final set.

A key with acknowledged writes and no successful final read is ``unknown``, not ``ok``.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.history import Operation

_REGISTER = frozenset({"write", "cas", "delete"})


def _written_value(op: Operation) -> Any:
    if op.f == "cas":
        return op.value[1]
    return None if op.f == "delete" else op.value


def final_reads(ops: Iterable[Operation]) -> dict[Any, Operation]:
    """The last successful final strong read of each key."""
    out: dict[Any, Operation] = {}
    for op in ops:
        if op.final and op.f == "read" and op.type == "ok" and op.consistency != "eventual":
            if op.key not in out or op.call >= out[op.key].call:
                out[op.key] = op
    return out


def check_lost_writes(ops: Iterable[Operation]) -> CheckResult:
    ops = list(ops)
    result = CheckResult("lost-writes")
    finals = final_reads(ops)
    writes: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.f in _REGISTER or op.f in ("append", "add"):
            if op.type != "fail":
                writes[op.key].append(op)
    acked_total = 0
    for key, key_writes in sorted(writes.items(), key=lambda kv: str(kv[0])):
        acked = [w for w in key_writes if w.type == "ok"]
        acked_total += len(acked)
        if not acked:
            continue
        final = finals.get(key)
        if final is None:
            result.unknown("no-final-read", key, f"{len(acked)} acknowledged writes, no final read")
            continue
        if any(w.f in ("append", "add") for w in acked):
            _check_collection(result, key, key_writes, final)
        else:
            _check_register(result, key, key_writes, final)
    result.stats = {"keys": len(writes), "acknowledged_writes": acked_total,
                    "final_reads": len(finals)}
    return result


def _check_register(
    result: CheckResult, key: Any, writes: list[Operation], final: Operation
) -> None:
    acked = [w for w in writes if w.type == "ok" and w.version is not None]
    _check_versions_grow(result, key, acked)
    newest = max(acked, key=lambda w: w.version or 0, default=None)
    if final.output is None:  # absent
        if newest is None:
            return
        explained = any(
            w.f == "delete" and (w.type == "info" or (w.version or 0) > (newest.version or 0))
            for w in writes
        ) or newest.f == "delete"
        if not explained:
            result.anomaly(
                "lost-write", key,
                f"final read found no value, but {newest.describe()} was acknowledged",
                write=newest.to_json(), final=final.to_json(),
            )
        return
    if final.version is not None and newest is not None and final.version < (newest.version or 0):
        lost = [w for w in acked if (w.version or 0) > final.version]
        result.anomaly(
            "lost-write", key,
            f"final version {final.version} is older than {len(lost)} acknowledged write(s), "
            f"the newest {newest.describe()}",
            lost=[w.to_json() for w in lost], final=final.to_json(),
        )
        return
    same = [w for w in acked if w.version == final.version]
    if same and _written_value(same[0]) != final.output:
        result.anomaly(
            "corrupt-value", key,
            f"final read has version {final.version} with value {final.output!r}, "
            f"but that version was written with {_written_value(same[0])!r}",
            write=same[0].to_json(), final=final.to_json(),
        )
        return
    if all(_written_value(w) != final.output for w in writes):
        result.anomaly(
            "phantom-value", key,
            f"final value {final.output!r} was never written", final=final.to_json(),
        )


def _check_versions_grow(result: CheckResult, key: Any, acked: list[Operation]) -> None:
    """W2 invoked after W1 was acknowledged got a lower version than W1: W1 was forgotten."""
    by_ret = sorted(acked, key=lambda w: w.ret)
    rets = [w.ret for w in by_ret]
    best: list[Operation] = []  # best[i]: the highest-version write among by_ret[: i + 1]
    for w in by_ret:
        best.append(w if not best or (w.version or 0) > (best[-1].version or 0) else best[-1])
    reported = 0
    for later in sorted(acked, key=lambda w: w.call):
        i = bisect.bisect_left(rets, later.call)
        if i == 0:
            continue
        earlier = best[i - 1]
        if (later.version or 0) <= (earlier.version or 0) and reported < 20:
            reported += 1
            result.anomaly(
                "lost-write", key,
                f"{earlier.describe()} was acknowledged before {later.describe()} began, "
                f"which got version {later.version}: the node had forgotten the first",
                write=earlier.to_json(), later=later.to_json(),
            )


def _check_collection(
    result: CheckResult, key: Any, writes: list[Operation], final: Operation
) -> None:
    observed = list(final.output or [])
    counts = Counter(_freeze(v) for v in observed)
    attempted = {_freeze(w.value) for w in writes}
    for w in writes:
        if w.type != "ok":
            continue
        element = _freeze(w.value)
        if counts[element] == 0:
            result.anomaly(
                "lost-write", key, f"acknowledged {w.describe()} is missing from the final read",
                write=w.to_json(), final=final.to_json(),
            )
        elif counts[element] > 1 and w.f == "append":
            result.anomaly(
                "duplicated-write", key,
                f"acknowledged element {w.value!r} appears {counts[element]} times",
                write=w.to_json(),
            )
    phantoms = [v for v in counts if v not in attempted]
    if phantoms:
        result.anomaly(
            "phantom-value", key, f"final read holds elements never written: {phantoms[:10]!r}",
            final=final.to_json(),
        )


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value
