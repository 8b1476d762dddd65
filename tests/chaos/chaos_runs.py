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


def digest(report: Report, unrecovered: list[dict[str, Any]]) -> str:
    """The run's verdict in one line: what failed, what could not be checked, and why."""
    parts = [f"verdict {report.verdict}"]
    for check in report.checks:
        if check.verdict == "anomaly":
            first = check.anomalies[0] if check.anomalies else {}
            parts.append(f"{check.name}: {len(check.anomalies)} anomalies, first: "
                         f"{first.get('kind')} on {first.get('key')!r}: "
                         f"{str(first.get('message'))[:200]}")
        elif check.verdict == "unknown":
            first = check.unknowns[0] if check.unknowns else {}
            parts.append(f"{check.name}: unknown ({str(first.get('message', first))[:200]})")
    parts += [f"linearizability [{r.model}]: {r.verdict}" for r in report.linearizability
              if r.verdict != "ok"]
    if unrecovered:
        parts.append(f"never recovered: {[f.get('fault') for f in unrecovered]}")
    return "; ".join(parts)


async def run_and_explain(scenario: Scenario, seed: int, duration_s: float,
                          out: Path) -> tuple[Report, dict[str, Any]]:
    """Run; return the report and a few facts the tests assert on."""
    report = await run_scenario(RunOptions(scenario, seed, out, duration_s=duration_s))
    history = load_history(out / "history.jsonl")
    started = [e for e in history.nemesis if e.action == "start"]
    avail = report.check("availability").stats
    unrecovered = [f for f in avail.get("failovers", []) if f["failover_s"] is None]
    facts = {
        # One line first: CI shows a failure's first line in its short summary, and the
        # full summary may be cut from what it keeps.
        "digest": digest(report, unrecovered),
        "summary": (out / "summary.txt").read_text(),
        "reproduce": reproduce_command(scenario, seed, duration_s),
        "faults_started": sorted({e.fault for e in started}),
        "ok_operations": sum(1 for op in history.operations() if op.type == "ok"),
        "unrecovered": unrecovered,
    }
    return report, facts
