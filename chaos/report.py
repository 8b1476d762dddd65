"""Run every checker over a history and write what a person and a CI job need.

``analyze`` checks a history: linearizability of strong operations per key (under the model
each operation carries, recorded by the workload that generated it: never guessed from the
key or from what happened to it), lost writes, staleness of eventual reads, counters,
convergence (when digests are given), and availability figures. ``write_report`` writes
``DIR/report.json``, ``DIR/summary.txt`` (also returned, for stdout), ``DIR/history.jsonl``
and ``DIR/timeline.html``. The run's exit status is :attr:`Report.exit_status`: non-zero on any
anomaly, and also when a checker could not decide (unknown is not a pass).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardkv.chaos.checkers.availability import check_availability
from shardkv.chaos.checkers.convergence import check_convergence
from shardkv.chaos.checkers.counters import check_counters
from shardkv.chaos.checkers.lost_writes import check_lost_writes
from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.checkers.staleness import check_staleness
from shardkv.chaos.history import History, Operation
from shardkv.chaos.linearizability import LinearizabilityResult, check_history
from shardkv.chaos.models import MODELS, OPERATIONS, Model
from shardkv.chaos.timeline import render_timeline


def legacy_model_for(fs: set[str]) -> Model:
    """The model a history written before operations carried theirs was checked under,
    inferred from what was done to the key. Only for such old files: an operation recorded
    since names its model (``Operation.model``), and a key that saw only final reads must be
    checked under its workload's model, which no inference can recover."""
    if "incr" in fs:
        return MODELS["counter"]
    if "append" in fs:
        return MODELS["append"]
    if "add" in fs:
        return MODELS["set"]
    return MODELS["versioned-register"]


def models_of(ops: list[Operation]) -> dict[Any, str]:
    """The model of every key, from its operations' ``model`` (the workload that generated
    them). ValueError when one key's operations name two models (a workload bug: two
    workloads sharing a key under different specifications) or an unknown model. Keys whose
    operations name none (histories recorded before the field existed) fall back to
    :func:`legacy_model_for`."""
    named: dict[Any, set[str]] = defaultdict(set)
    fs_by_key: dict[Any, set[str]] = defaultdict(set)
    for op in ops:
        fs_by_key[op.key].add(op.f)
        if op.model is not None:
            named[op.key].add(op.model)
    out: dict[Any, str] = {}
    for key, fs in fs_by_key.items():
        names = named.get(key)
        if not names:
            out[key] = legacy_model_for(fs).name
            continue
        if len(names) > 1:
            raise ValueError(f"key {key!r} has operations recorded under models "
                             f"{sorted(names)}: one key, one specification")
        (name,) = names
        if name not in MODELS:
            raise ValueError(f"key {key!r}: unknown model {name!r} (known: {sorted(MODELS)})")
        out[key] = name
    return out


def check_linearizable(
    ops: list[Operation], *, time_budget_s: float | None = 30.0
) -> list[LinearizabilityResult]:
    """Strong operations only (eventual reads are checked for staleness instead), each key
    under the model its workload recorded."""
    strong = [op for op in ops if op.consistency != "eventual"]
    model_of_key = models_of(strong)
    groups: dict[str, list[Operation]] = defaultdict(list)
    for op in strong:
        name = model_of_key[op.key]
        if op.f in OPERATIONS[name]:
            groups[name].append(op)
    return [
        check_history(group, MODELS[name], time_budget_s=time_budget_s)
        for name, group in sorted(groups.items())
    ]


@dataclass
class Report:
    linearizability: list[LinearizabilityResult]
    checks: list[CheckResult]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        verdicts = [r.verdict for r in self.linearizability] + [c.verdict for c in self.checks]
        if "illegal" in verdicts or "anomaly" in verdicts:
            return "anomaly"
        return "unknown" if "unknown" in verdicts else "ok"

    @property
    def exit_status(self) -> int:
        return {"ok": 0, "anomaly": 1, "unknown": 2}[self.verdict]

    def failing(self) -> set[str]:
        """The names of the checkers that found an anomaly (``linearizability`` for any
        illegal model)."""
        out = {c.name for c in self.checks if c.verdict == "anomaly"}
        if any(r.verdict == "illegal" for r in self.linearizability):
            out.add("linearizability")
        return out

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "meta": self.meta,
            "linearizability": [r.to_json() for r in self.linearizability],
            "checks": {c.name: c.to_json() for c in self.checks},
        }

    def summary(self) -> str:
        lines = [f"chaos verdict: {self.verdict.upper()}"]
        for key, value in self.meta.items():
            lines.append(f"  {key}: {value}")
        for lin in self.linearizability:
            js = lin.to_json()
            lines.append(
                f"linearizability [{lin.model}]: {lin.verdict} "
                f"({js['operations']} ops over {js['keys_checked']} keys, {js['elapsed_s']} s)"
            )
            for bad in lin.illegal:
                if bad.window is not None:
                    lines.extend("  " + line for line in bad.window.describe().splitlines())
            if js["unknown_keys"]:
                lines.append(f"  time budget exceeded on keys {js['unknown_keys'][:10]}")
        for check in self.checks:
            if check.name == "availability":
                continue
            lines.append(f"{check.name}: {check.verdict} {_brief(check.stats)}")
            lines.extend(f"  - [{a['kind']}] {a['message']}" for a in check.anomalies[:20])
            if len(check.anomalies) > 20:
                lines.append(f"  ... and {len(check.anomalies) - 20} more (report.json)")
            lines.extend(
                f"  ? [{u['kind']}] {u['key']}: {u['message']}" for u in check.unknowns[:5]
            )
        avail = next((c for c in self.checks if c.name == "availability"), None)
        if avail is not None and avail.stats:
            lines.append("availability:")
            for name, phase in avail.stats["phases"].items():
                lat = phase["latency_ms"]
                lines.append(
                    f"  {name}: {phase['operations']} ops, answered "
                    f"{_pct(phase['answered_fraction'])}, ok {_pct(phase['ok_fraction'])}, "
                    f"latency ms p50 {lat['p50']} p99 {lat['p99']} max {lat['max']}"
                )
            for fo in avail.stats["failovers"]:
                took = "never recovered" if fo["failover_s"] is None else f"{fo['failover_s']} s"
                lines.append(
                    f"  fault {fo['fault']} {','.join(fo['targets'])} at {fo['start_s']} s: "
                    f"{fo['affected_keys']} keys affected, back after {took}"
                )
        return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _brief(stats: Mapping[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in stats.items()) + ")" if stats else ""


def analyze(
    history: History,
    *,
    digests: Mapping[str, Mapping[str, Any]] | None = None,
    slack_ms: float = 0.0,
    time_budget_s: float | None = 30.0,
    meta: Mapping[str, Any] | None = None,
) -> Report:
    ops = history.operations()
    checks = [
        check_lost_writes(ops),
        check_staleness(ops, slack_ms=slack_ms),
        check_counters(ops),
    ]
    if digests is not None:
        checks.append(check_convergence(digests))
    checks.append(check_availability(ops, history.nemesis))
    info = {"operations": len(ops), "nemesis_events": len(history.nemesis), **dict(meta or {})}
    return Report(check_linearizable(ops, time_budget_s=time_budget_s), checks, info)


def write_report(
    report: Report, history: History, out_dir: str | Path, *, include_history: bool = True
) -> str:
    """Write the report files into ``out_dir``; returns the summary text."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    text = report.summary()
    (out / "summary.txt").write_text(text + "\n")
    if include_history:
        history.dump(out / "history.jsonl")
    (out / "timeline.html").write_text(
        render_timeline(history.operations(), history.nemesis, title=f"shardkv chaos: "
                        f"{report.meta.get('scenario', 'run')} ({report.verdict})"),
        encoding="utf-8",
    )
    return text
