"""The clock-skew scenario end to end, against a local cluster: nodes' clocks stepped,
strobed and drifting (a primary's 4 % slow while it is cut off from the other members, inside
the 5 % the lease argument assumes), under registers, appends, counters and bounded eventual
reads. No anomaly is allowed and every kind of clock fault must have run.

The isolated-primary fault needs the loopback partition (root, iptables, cgroup2): where it is
missing the test skips with the reason (the clock nemesis alone is tested in
tests/integration/test_clock_admin.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_runs import run_and_explain
from shardkv.chaos.nemesis.loopback_partition import loopback_partition_available
from shardkv.chaos.scenarios import get_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(300)]

SEED = 14  # its 45 s schedule plays each of the four clock faults once
DURATION_S = 45.0


async def test_clock_skew_scenario_has_no_anomaly(tmp_path: Path) -> None:
    available, why = await loopback_partition_available()
    if not available:
        pytest.skip(f"the isolated-primary clock fault needs the loopback partition: {why}")
    scenario = get_scenario("clock-skew")
    report, facts = await run_and_explain(scenario, SEED, DURATION_S, tmp_path / "run")
    explain = f"{facts['digest']}\n{facts['summary']}\nreproduce: {facts['reproduce']}"
    assert report.exit_status == 0, explain
    assert facts["faults_started"] == ["clock-bump", "clock-drift",
                                       "clock-drift-isolated-primary", "clock-strobe"], explain
    assert facts["ok_operations"] > 500, explain
    assert not facts["unrecovered"], explain
