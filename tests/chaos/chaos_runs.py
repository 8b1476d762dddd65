"""Shared by the scenario tests: run one scenario into a tmp dir and explain a failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shardkv.chaos.history import load_history
from shardkv.chaos.report import Report
from shardkv.chaos.runner import RunOptions, run_scenario
from shardkv.chaos.scenarios import Scenario


def reproduce_command(scenario: Scenario, seed: int, duration_s: float) -> str:
    topology = f" --topology {scenario.shape.topology}"
    return (f"shardkv chaos run --scenario {scenario.name} --seed {seed} "
            f"--duration {duration_s:g}s{topology} --out /tmp/chaos-{scenario.name}-{seed}")


async def run_and_explain(scenario: Scenario, seed: int, duration_s: float,
                          out: Path) -> tuple[Report, dict[str, Any]]:
    """Run; return the report and a few facts the tests assert on."""
    report = await run_scenario(RunOptions(scenario, seed, out, duration_s=duration_s))
    history = load_history(out / "history.jsonl")
    started = [e for e in history.nemesis if e.action == "start"]
    avail = report.check("availability").stats
    facts = {
        "summary": (out / "summary.txt").read_text(),
        "reproduce": reproduce_command(scenario, seed, duration_s),
        "faults_started": sorted({e.fault for e in started}),
        "ok_operations": sum(1 for op in history.operations() if op.type == "ok"),
        "unrecovered": [f for f in avail.get("failovers", []) if f["failover_s"] is None],
    }
    return report, facts
