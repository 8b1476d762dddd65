"""A bench-only probe of event-loop slices in every process that imports it.

Put this directory on ``PYTHONPATH`` and set ``SHARDKV_LOOP_PROBE_DIR``: each Python process
started so (nodes, coordinators, the bench's client) then times every callback its asyncio
loop runs (``Handle._run``: one slice of the loop, during which nothing else on that loop
runs) and, once per wall-clock second, appends that second's totals as one JSON line to
``$SHARDKV_LOOP_PROBE_DIR/loop-<pid>.jsonl``: callbacks, busy seconds, process CPU seconds,
how many slices took at least 1, 2, 5, 10 and 20 ms, the longest, and per callback name the
count and milliseconds of its slices of 1 ms or more. The first line names the process.

Why: a foreground request waits for the slice in progress (and for the ones queued before
it), so the longest slices of a source during a migration's copy and clean-up are a floor
under the foreground's tail; the busy and CPU seconds say whether a process was short of
CPU rather than of loop. ``bench/loop_probe_report.py`` sums the lines per phase. Nothing
in shardkv imports this; without the variable it does nothing.
"""

from __future__ import annotations

import asyncio.events
import json
import os
import sys
import time
from typing import Any

_DIR = os.environ.get("SHARDKV_LOOP_PROBE_DIR")
_EDGES_MS = (1, 2, 5, 10, 20)


def _name(callback: Any) -> str:
    """The task a slice ran, by its outer coroutine and where it is suspended now."""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        outer = getattr(coro, "__qualname__", "?")
        inner = coro
        for _ in range(20):
            nxt = getattr(inner, "cr_await", None) or getattr(inner, "ag_await", None)
            if nxt is None or not hasattr(nxt, "__qualname__"):
                break
            inner = nxt
        where = getattr(inner, "__qualname__", "?")
        return outer if where == outer else f"{outer} > {where}"
    return getattr(callback, "__qualname__", None) or type(callback).__name__


def _install(directory: str) -> None:
    path = os.path.join(directory, f"loop-{os.getpid()}.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[:8]}) + "\n")
    state: dict[str, Any] = {"second": int(time.time()), "cpu": time.process_time()}

    def fresh() -> dict[str, Any]:
        return {"callbacks": 0, "busy_s": 0.0, "ge_ms": [0] * len(_EDGES_MS), "max_ms": 0.0,
                "max_name": "", "slow": {}}

    bucket = fresh()
    original = asyncio.events.Handle._run

    def flush(second: int) -> None:
        nonlocal bucket
        cpu = time.process_time()
        line = {"t": state["second"], "cpu_s": round(cpu - state["cpu"], 4),
                **bucket, "busy_s": round(bucket["busy_s"], 4),
                "max_ms": round(bucket["max_ms"], 2),
                "slow": {k: [v[0], round(v[1], 1)] for k, v in bucket["slow"].items()}}
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
        state["second"], state["cpu"] = second, cpu
        bucket = fresh()

    def timed_run(self: asyncio.events.Handle) -> None:
        began = time.perf_counter()
        original(self)
        took = time.perf_counter() - began
        second = int(time.time())
        if second != state["second"]:
            flush(second)
        b = bucket
        b["callbacks"] += 1
        b["busy_s"] += took
        ms = took * 1000
        if ms >= 1:
            ge = b["ge_ms"]
            for i, edge in enumerate(_EDGES_MS):
                if ms >= edge:
                    ge[i] += 1
            name = _name(self._callback)
            slot = b["slow"].setdefault(name, [0, 0.0])
            slot[0] += 1
            slot[1] += ms
            if ms > b["max_ms"]:
                b["max_ms"], b["max_name"] = ms, name

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]


if _DIR:
    _install(_DIR)
