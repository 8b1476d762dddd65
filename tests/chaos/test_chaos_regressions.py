"""Regression entry point: one pinned scenario per bug the harness found (etcd's
robustness tests keep the same two entry points: regressions here, exploration in
test_chaos_explore.py). Each runs with the seed that found the bug; the table in
chaos/README.md has the reproduction command of each."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_runs import run_and_explain
from shardkv.chaos.scenarios import SCENARIOS

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(240)]

# scenario -> (seed, duration of faults in seconds)
PINNED = {
    "standalone-crash": (1, 20.0),
    "restart-eventual-reads": (20261122, 25.0),
    "paused-primary-eventual-reads": (11, 50.0),
    "partitioned-replica-eventual-reads": (11, 30.0),
}


def test_every_regression_scenario_is_pinned() -> None:
    assert {n for n, s in SCENARIOS.items() if s.regression} == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
async def test_regression_scenario(name: str, tmp_path: Path) -> None:
    seed, duration_s = PINNED[name]
    scenario = SCENARIOS[name]
    report, facts = await run_and_explain(scenario, seed, duration_s, tmp_path / "run")
    explain = (f"{facts['digest']}\n{scenario.regression}\n{facts['summary']}\n"
               f"reproduce: {facts['reproduce']}")
    assert facts["faults_started"], explain
    # Every fault window must end with the clients served again (the proxy bug left every
    # client hung after the first restart).
    assert not facts["unrecovered"], explain
    assert report.exit_status == 0, explain
