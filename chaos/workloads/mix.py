"""Running a mix of workloads as concurrent client processes, then the final reads.

``WorkloadMix`` names which workloads run and with how many workers each. ``run_workloads``
starts the workers on one shared workload client (one pipelined connection per node: the
workers are logical processes, as in Jepsen, not separate sockets), paces them so a run of
minutes stays checkable, and stops them when ``stop`` is set. ``final_reads`` then reads every
key once more, strongly and patiently (retries allowed: reads have no effect), marked
``final`` for the lost-writes and counter checkers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from shardkv.chaos.workloads.kinds import (
    AppendWorkload,
    Context,
    CounterWorkload,
    EventualReadWorkload,
    RegisterWorkload,
    Workload,
)
from shardkv.chaos.workloads.recorder import Outcome, Recorder
from shardkv.chaos.workloads.watch_workload import WatchWorkload
from shardkv.client import Client

log = logging.getLogger(__name__)

WORKLOADS = ("register", "append", "eventual", "counter", "watch")
FAILURE_PAUSE_S = 0.05


@dataclass(frozen=True)
class WorkloadMix:
    """Workers per workload, the pause between a worker's operations, and the bound of the
    eventual reads. The default is a little of everything."""

    workers: Mapping[str, int] = field(default_factory=lambda: {
        "register": 3, "append": 2, "eventual": 2, "counter": 2})
    pace_s: float = 0.01
    staleness_bound_ms: int = 1000
    register_keys: int = 3
    # "off": Retry(retries=0), every outcome as the node gave it; "default": the client
    # users run, retries on (see recorder.workload_client).
    retries: str = "off"
    # Send strong reads to any member, as eventual reads are (a replica that obeys the rules
    # redirects them to the primary): only for the linearizability negative control.
    strong_reads_anywhere: bool = False

    def build(self, ctx: Context) -> dict[str, Workload]:
        unknown = sorted(set(self.workers) - set(WORKLOADS))
        if unknown:
            raise ValueError(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
        ctx.strong_reads_anywhere = self.strong_reads_anywhere
        registers = RegisterWorkload(ctx, key_count=self.register_keys)
        built: dict[str, Workload] = {
            "register": registers,
            "append": AppendWorkload(ctx),
            "eventual": EventualReadWorkload(ctx, registers, bound_ms=self.staleness_bound_ms),
            "counter": CounterWorkload(ctx),
            "watch": WatchWorkload(ctx),
        }
        return {name: built[name] for name, n in self.workers.items() if n > 0} | (
            {"register": registers} if self.workers.get("eventual") else {}
        )


async def _worker(workload: Workload, client: Client, recorder: Recorder,
                  rng: random.Random, stop: asyncio.Event, pace_s: float) -> None:
    process = recorder.new_process()
    while not stop.is_set():
        ok_before = recorder.counts["ok"]
        try:
            await workload.step(client, process, rng)
        except Exception:
            # A bug in a workload must not end the run silently: log it loudly, keep going.
            log.exception("workload %s step failed", workload.name)
        # After a failure, back off a little: a dead node refuses at once, and a worker that
        # spins on refusals fills the history with thousands of identical failed operations.
        pause = pace_s if recorder.counts["ok"] > ok_before else max(pace_s, FAILURE_PAUSE_S)
        if pause > 0:
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass


async def run_workloads(
    mix: WorkloadMix,
    workloads: Mapping[str, Workload],
    client: Client,
    recorder: Recorder,
    stop: asyncio.Event,
    *,
    seed: int,
) -> None:
    """Run every worker until ``stop``; each worker has its own generator from the seed."""
    tasks = []
    for name, count in sorted(mix.workers.items()):
        for i in range(count):
            rng = random.Random(f"{seed}/{name}/{i}")
            tasks.append(asyncio.create_task(
                _worker(workloads[name], client, recorder, rng, stop, mix.pace_s),
                name=f"chaos-{name}-{i}"))
    try:
        await stop.wait()
    finally:
        # Let in-flight operations finish (they are bounded by the per-call timeout).
        _done, pending = await asyncio.wait(tasks, timeout=30.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def final_reads(
    workloads: Mapping[str, Workload],
    client: Client,
    recorder: Recorder,
    *,
    deadline_s: float = 60.0,
) -> dict[str, str]:
    """One successful final strong read per key (retried until ``deadline_s``); returns the
    keys that could not be read, with the last error, for the report."""
    unread: dict[str, str] = {}
    ends = time.monotonic() + deadline_s
    for workload in workloads.values():
        for key in workload.keys():
            process = recorder.new_process()

            async def read(key: str = key, workload: Workload = workload) -> Outcome:
                return workload.decode(await client.get(key, timeout=5.0))

            while True:
                seen = await recorder.record(process, "read", key, None, read,
                                             model=workload.model, consistency="strong",
                                             final=True)
                if seen is not None:
                    unread.pop(key, None)
                    break
                last = recorder.history.events[-1]
                unread[key] = str(last.error)
                if time.monotonic() > ends:
                    break
                await asyncio.sleep(0.5)
    return unread
