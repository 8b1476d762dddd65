"""Negative controls end to end: each checker must catch its own bug on a real cluster.

Each ``control-*`` scenario arms one deliberate node bug (``node/testing/negative_controls.py``,
inert unless ``SHARDKV_TEST_ADMIN=1`` and ``SHARDKV_NEGATIVE_CONTROLS``) for a short run and
names the checkers that must fail: exactly those, no other. A checker that cannot catch its
own bug is a failing test. (A lost acknowledged write and a doubled increment are also,
necessarily, non-linearizable histories: those controls name linearizability too; the
linearizability and staleness controls fail their checker alone.)

``clock-beyond-bound`` (a primary's clock at 40 % of real time while it is cut off) is the
lease's own negative control: its assumption is broken on purpose, so the test asks for a
verdict (the run was carried out, the fault happened) and prints which checkers failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_runs import run_and_explain
from shardkv.chaos.nemesis.loopback_partition import loopback_partition_available
from shardkv.chaos.scenarios import NEGATIVE_CONTROLS, SCENARIOS

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(180)]

SEED = 1
DURATION_S = 12.0
CONTROLS = {s.name: s for s in NEGATIVE_CONTROLS}


@pytest.mark.parametrize("name", sorted(CONTROLS))
async def test_negative_control_fails_its_checker_and_only_it(name: str,
                                                              tmp_path: Path) -> None:
    scenario = CONTROLS[name]
    control = scenario.negative_control
    assert control is not None
    report, facts = await run_and_explain(scenario, SEED, DURATION_S, tmp_path / "run")
    explain = f"{facts['digest']}\n{facts['summary']}\nreproduce: {facts['reproduce']}"
    assert report.meta["negative_control"]["switch"] == control.switch, explain
    assert facts["ok_operations"] > 50, explain
    assert report.failing() == set(control.must_fail), explain
    assert report.exit_status == 1, explain
    # The one-line digest (what CI's short summary shows) names each failing checker.
    assert facts["digest"].startswith("verdict anomaly; "), explain
    assert all(f"{checker} " in facts["digest"] or f"{checker}:" in facts["digest"]
               for checker in control.must_fail), explain


async def test_clock_beyond_bound_runs_to_a_verdict(tmp_path: Path) -> None:
    available, why = await loopback_partition_available()
    if not available:
        pytest.skip(f"clock-beyond-bound isolates a primary: {why}")
    scenario = SCENARIOS["clock-beyond-bound"]
    report, facts = await run_and_explain(scenario, SEED, 25.0, tmp_path / "run")
    explain = f"{facts['digest']}\n{facts['summary']}\nreproduce: {facts['reproduce']}"
    print(f"clock-beyond-bound: verdict {report.verdict}, failing {sorted(report.failing())}")
    assert facts["faults_started"] == ["clock-drift-isolated-primary"], explain
    assert report.exit_status in (0, 1), explain  # a verdict, not a harness failure
    assert facts["ok_operations"] > 100, explain
