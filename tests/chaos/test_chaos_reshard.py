"""The ``reshard`` scenario, short (CI): shards added, reweighted or removed online under
register, CAS and counter workloads with the default client must leave a clean history, at
least one migration ``done``, and every touched key held by exactly its ring owner's primary
(the ownership checker, ``chaos/checkers/ownership.py``).

The windows are shortened (quiet 3-4 s, migration window 8-10 s) so that a 35-s run holds
at least one whole migration; the 5-minute runs with the scenario's own timing are in
chaos/README.md.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from chaos_runs import run_and_explain
from shardkv.chaos.history import load_history
from shardkv.chaos.scenarios import SCENARIOS

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(180)]

SEED = 12
DURATION_S = 35.0


async def test_ring_changes_under_load_leave_a_clean_history(tmp_path: Path) -> None:
    scenario = replace(SCENARIOS["reshard"], quiet_s=(3.0, 4.0), fault_s=(8.0, 10.0),
                       settle_s=5.0)
    report, facts = await run_and_explain(scenario, SEED, DURATION_S, tmp_path / "run")
    explain = (f"{facts['digest']}\n{facts['summary']}\n"
               f"reproduce: {facts['reproduce']} (windows shortened)")
    assert facts["faults_started"], explain
    assert set(facts["faults_started"]) <= {"reshard-add", "reshard-weight",
                                             "reshard-remove"}, explain
    assert facts["ok_operations"] > 500, explain
    ownership = report.check("ownership")
    assert ownership.stats["migrations"].get("done", 0) >= 1, explain
    assert ownership.stats["keys_held"] >= 20, explain  # the register and counter keys
    history = load_history(tmp_path / "run" / "history.jsonl")
    moved = [e for e in history.nemesis if e.fault.startswith("reshard-")
             and e.action == "stop" and e.detail.get("state") == "done"]
    assert moved and all(e.detail["keys_moved"] >= 1 for e in moved), explain
    assert report.exit_status == 0, explain
