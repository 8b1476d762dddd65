"""Exploratory entry point: random faults from a seed, for as long as you like.

Off by default (it is a search, not a check: minutes per seed). Run it with::

    SHARDKV_CHAOS_EXPLORE=1 [SHARDKV_CHAOS_SEED=N] [SHARDKV_CHAOS_SCENARIO=random] \\
    [SHARDKV_CHAOS_DURATION=120] [SHARDKV_CHAOS_RUNS=1] \\
    .venv/bin/pytest tests/chaos/test_chaos_explore.py -s

Each run prints its seed and reproduction command; a failing seed becomes a pinned scenario in
test_chaos_regressions.py and a row of the table in chaos/README.md.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from chaos_runs import run_and_explain
from shardkv.chaos.nemesis.loopback_partition import loopback_partition_available
from shardkv.chaos.scenarios import get_scenario

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("SHARDKV_CHAOS_EXPLORE") != "1",
                       reason="exploratory chaos runs only with SHARDKV_CHAOS_EXPLORE=1"),
]

RUNS = int(os.environ.get("SHARDKV_CHAOS_RUNS", "1"))
BASE_SEED = int(os.environ.get("SHARDKV_CHAOS_SEED", str(random.SystemRandom().randrange(10**6))))


@pytest.mark.timeout(0)
@pytest.mark.parametrize("run", range(RUNS))
async def test_explore(run: int, tmp_path: Path) -> None:
    scenario = get_scenario(os.environ.get("SHARDKV_CHAOS_SCENARIO", "random"))
    available, why = await loopback_partition_available()
    if not available and scenario.shape.topology == "cluster":
        pytest.skip(f"network faults need the loopback partition: {why}")
    seed = BASE_SEED + run
    duration_s = float(os.environ.get("SHARDKV_CHAOS_DURATION", "120"))
    print(f"exploring {scenario.name} with seed {seed} for {duration_s:g} s")
    report, facts = await run_and_explain(scenario, seed, duration_s, tmp_path / "run")
    print(facts["summary"])
    assert report.exit_status == 0, f"{facts['summary']}\nreproduce: {facts['reproduce']}"
