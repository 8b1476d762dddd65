"""A bench-only probe of the garbage collector's cost in every process that imports it.

Put this directory on ``PYTHONPATH`` and set ``SHARDKV_GC_PROBE_DIR``: each Python process
started so (nodes, coordinators, the client) then times every collection through
``gc.callbacks`` and, on ``SIGUSR2``, appends its totals so far (collections, seconds and the
longest pause, per generation) as one JSON line to ``$SHARDKV_GC_PROBE_DIR/gc-<pid>.jsonl``.
``bench/cluster_put_ab.py --gc-probe`` signals at the edges of its window and subtracts.

Why a probe and not the profile: py-spy attributes a collection to whatever Python line
allocated the object that triggered it, so the collector's own cost is invisible there.
Nothing in shardkv imports this; without the variable it does nothing.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from typing import Any

_DIR = os.environ.get("SHARDKV_GC_PROBE_DIR")


def _install(directory: str) -> None:
    totals = {gen: [0, 0.0, 0.0] for gen in range(3)}  # count, seconds, longest
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        row = totals[info["generation"]]
        row[0] += 1
        row[1] += took
        row[2] = max(row[2], took)

    def dump(_signum: int, _frame: object) -> None:
        line = json.dumps({"pid": os.getpid(), "at": time.monotonic(),
                           "gen": {str(g): v for g, v in totals.items()},
                           "counts": gc.get_count()})
        with open(os.path.join(directory, f"gc-{os.getpid()}.jsonl"), "a") as f:
            f.write(line + "\n")

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR2, dump)


if _DIR:
    _install(_DIR)
