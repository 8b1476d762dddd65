"""The chaos harness's watch workload (chaos/workloads/watch_workload.py) against a real
node that restarts under it: the watch resumes, and the checker finds every acknowledged
write delivered exactly once, in order. The `random` chaos scenario runs it under faults."""

from __future__ import annotations

import asyncio
import random

import pytest
from shardkv.chaos.history import History
from shardkv.chaos.workloads.kinds import Context
from shardkv.chaos.workloads.mix import WorkloadMix
from shardkv.chaos.workloads.recorder import Recorder
from shardkv.chaos.workloads.watch_workload import WatchWorkload
from shardkv.client import Client

pytestmark = pytest.mark.integration


async def _write(workload: WatchWorkload, client: Client, recorder: Recorder,
                 rng: random.Random, count: int) -> None:
    process = recorder.new_process()
    for _ in range(count):
        await workload.step(client, process, rng)


async def test_the_watch_workload_checks_out_across_a_node_restart(node_factory) -> None:
    node = node_factory(fsync="always")
    recorder = Recorder(History())
    workload = WorkloadMix({"watch": 1}).build(Context(recorder, timeout=2.0))["watch"]
    assert isinstance(workload, WatchWorkload)
    rng = random.Random(15)
    async with Client(nodes=[node.url]) as client:
        await _write(workload, client, recorder, rng, 40)
        await asyncio.to_thread(node.terminate)
        await asyncio.to_thread(node.restart)
        await _write(workload, client, recorder, rng, 40)
        result = await workload.finish()
    assert result.verdict == "ok", (result.anomalies[:5], result.stats)
    acked = [w for w in workload.writes if w.version is not None]
    assert len(acked) >= 60  # writes right after the restart may fail; most go through
    assert result.stats["events"] >= len(acked) and result.stats["watch_error"] is None


def test_the_random_scenario_runs_the_watch_workload() -> None:
    from shardkv.chaos.scenarios import get_scenario

    assert get_scenario("random").mix.workers.get("watch") == 1
