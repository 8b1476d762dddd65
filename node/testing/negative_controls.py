"""Negative controls: deliberate, test-only bugs that each chaos checker must catch.

A checker only tested on synthetic histories may stay silent on a real cluster (a workload
that never produces the pattern, a recorder that hides it). Each switch here breaks one
guarantee of the node on purpose, so that a short chaos run can prove its checker fails
(``chaos/scenarios.py``: the ``control-*`` scenarios; ``tests/chaos/test_chaos_negative_
controls.py``). They are armed only by ``SHARDKV_NEGATIVE_CONTROLS=name[,name]`` in the
environment of a node that also runs with ``SHARDKV_TEST_ADMIN=1`` (read once, at import);
anything else leaves them inert, and an unknown name stops the node at start (a typo must not
silently run the control-free node).

=========================  ============================================  ==================
switch                     what the node does wrong                      checker it breaks
=========================  ============================================  ==================
``ack-before-wal-write``   acknowledges a WAL group before writing it,   lost writes
                           and writes it ``WAL_DELAY_S`` later (a crash
                           in between loses acknowledged writes)
``replica-strong-reads``   a replica answers strong reads from its own   linearizability
                           state instead of redirecting to the primary
``skip-staleness-check``   a replica answers bounded eventual reads      staleness
                           however far behind its primary it is
``double-apply-incr``      every ``DOUBLE_EVERY``-th increment is        counters
                           applied twice (as a retried increment would
                           be without deduplication)
``replica-drops-entries``  a replica applies the entries it receives     convergence
                           from the ``DROP_FROM``-th on as no-ops (same
                           LSN, no mutations) and acknowledges them
=========================  ============================================  ==================

Hooks in node code are one line each, behind ``if negative_controls.ENABLED:`` (an empty
frozenset unless armed) and marked ``TEST ONLY``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

ENV_CONTROLS = "SHARDKV_NEGATIVE_CONTROLS"
ENV_TEST_ADMIN = "SHARDKV_TEST_ADMIN"
KNOWN = frozenset({"ack-before-wal-write", "replica-strong-reads", "skip-staleness-check",
                   "double-apply-incr", "replica-drops-entries"})
WAL_DELAY_S = 1.5
DOUBLE_EVERY = 10
DROP_FROM = 100


def parse(spec: str, *, test_admin: bool) -> frozenset[str]:
    """The switches named by ``spec`` (comma separated); empty unless ``test_admin``.
    ValueError on an unknown name."""
    names = frozenset(n.strip() for n in spec.split(",") if n.strip())
    unknown = sorted(names - KNOWN)
    if unknown:
        raise ValueError(f"{ENV_CONTROLS}: unknown negative control(s) {unknown}; "
                         f"known: {sorted(KNOWN)}")
    if names and not test_admin:
        logger.warning("%s ignored: the node does not run with %s=1", ENV_CONTROLS,
                       ENV_TEST_ADMIN)
        return frozenset()
    if names:
        logger.warning("NEGATIVE CONTROLS ARMED (this node is broken on purpose): %s",
                       ", ".join(sorted(names)))
    return names


ENABLED: frozenset[str] = parse(os.environ.get(ENV_CONTROLS, ""),
                                test_admin=os.environ.get(ENV_TEST_ADMIN) == "1")
_incrs = itertools.count(1)
_replicated = itertools.count(1)


def on(name: str) -> bool:
    return name in ENABLED


async def ack_before_wal_write(appends: Sequence[Any],
                               queued: Callable[[], Sequence[Any]]) -> None:
    """``ack-before-wal-write``: resolve the group's futures (the writers see their entries
    as durable and answer their clients), then hold the write back ``WAL_DELAY_S``, resolving
    the futures of whatever queues meanwhile too (``queued()``: the WAL's pending items; those
    without a future are segment headers): every write is acknowledged at once and written
    ``WAL_DELAY_S`` later, so a crash at any time loses acknowledged writes."""
    if "ack-before-wal-write" not in ENABLED:
        return
    ends = asyncio.get_running_loop().time() + WAL_DELAY_S
    while True:
        for item in (*appends, *queued()):
            future = getattr(item, "future", None)
            if future is not None and not future.done():
                future.set_result(None)
        left = ends - asyncio.get_running_loop().time()
        if left <= 0:
            return
        await asyncio.sleep(min(0.005, left))


def incr_delta(delta: int) -> int:
    """``double-apply-incr``: every ``DOUBLE_EVERY``-th increment counts twice."""
    if "double-apply-incr" in ENABLED and next(_incrs) % DOUBLE_EVERY == 0:
        return 2 * delta
    return delta


def replica_entry(entry: Any) -> Any:
    """``replica-drops-entries``: from the ``DROP_FROM``-th replicated entry on, entries lose
    their mutations (their LSNs stay, so the log has no gap and nothing downstream notices;
    the replica's data silently stops changing)."""
    if "replica-drops-entries" not in ENABLED or not entry.mutations:
        return entry
    if next(_replicated) >= DROP_FROM:
        return dataclasses.replace(entry, mutations=())
    return entry
