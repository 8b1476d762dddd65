"""The soak's summary table: one row per run, written as Markdown and as HTML.

A row says what a reader of a soak needs to decide whether to look closer: the scenario and
seed (enough to replay it), how many operations and faults the run had, what each checker
found, and how long the failovers took (the availability checker's figure: from a fault's
start until every key it touched answered ok again).
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from shardkv.chaos.report import Report


@dataclass
class SoakRow:
    scenario: str
    seed: int
    verdict: str  # ok, anomaly, unknown, aborted
    seconds: float = 0.0
    operations: int = 0
    outcomes: str = ""
    faults: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    failover_s: list[float] = field(default_factory=list)
    unrecovered: int = 0
    artifacts: str = ""  # kept directory (failing runs only)
    reason: str = ""  # why an aborted run could not be carried out

    @classmethod
    def from_report(cls, scenario: str, seed: int, report: Report, faults: int,
                    seconds: float) -> SoakRow:
        anomalies = {c.name: len(c.anomalies) for c in report.checks if c.anomalies}
        for lin in report.linearizability:
            if lin.illegal:
                anomalies[f"linearizability[{lin.model}]"] = len(lin.illegal)
        avail = next((c for c in report.checks if c.name == "availability"), None)
        failovers = (avail.stats.get("failovers", []) if avail is not None else [])
        counts = report.meta.get("operations_by_outcome", {})
        return cls(
            scenario, seed, report.verdict, round(seconds, 1),
            int(report.meta.get("operations", 0)),
            "/".join(str(counts.get(k, 0)) for k in ("ok", "fail", "info")),
            faults, anomalies,
            [f["failover_s"] for f in failovers if f.get("failover_s")],
            sum(1 for f in failovers if f.get("failover_s") is None),
        )

    def failover_text(self) -> str:
        if not self.failover_s:
            return "-" if not self.unrecovered else f"{self.unrecovered} never"
        xs = sorted(self.failover_s)
        text = f"{xs[0]:.1f} / {statistics.median(xs):.1f} / {xs[-1]:.1f}"
        return text + (f" ({self.unrecovered} never)" if self.unrecovered else "")

    def anomaly_text(self) -> str:
        if self.verdict == "aborted":
            return f"aborted: {self.reason}"
        return ", ".join(f"{k}:{v}" for k, v in sorted(self.anomalies.items())) or "0"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


HEADERS = ("scenario", "seed", "s", "operations", "ok/fail/info", "faults",
           "failover s min/med/max", "anomalies", "verdict", "artifacts")


def _cells(row: SoakRow) -> list[str]:
    return [row.scenario, str(row.seed), f"{row.seconds:.0f}", str(row.operations),
            row.outcomes, str(row.faults), row.failover_text(), row.anomaly_text(),
            row.verdict, row.artifacts or "-"]


def totals(rows: Sequence[SoakRow]) -> str:
    runs = len(rows)
    bad = sum(1 for r in rows if r.verdict not in ("ok", "aborted"))
    aborted = sum(1 for r in rows if r.verdict == "aborted")
    ops = sum(r.operations for r in rows)
    faults = sum(r.faults for r in rows)
    hours = sum(r.seconds for r in rows) / 3600
    scenarios = len({r.scenario for r in rows})
    return (f"{runs} runs of {scenarios} scenarios in {hours:.2f} h: {ops} operations, "
            f"{faults} faults, {bad} runs with anomalies or unknowns, {aborted} aborted")


def markdown(rows: Sequence[SoakRow], title: str) -> str:
    lines = [f"# {title}", "", totals(rows), "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_page(rows: Sequence[SoakRow], title: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = []
    for r in rows:
        css = "ok" if r.verdict == "ok" else ("aborted" if r.verdict == "aborted" else "bad")
        body.append(f'<tr class="{css}">' + "".join(
            f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>")
    return (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px}"
        "tr.bad{background:#fdd}tr.aborted{background:#eee}</style>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(totals(rows))}</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table>\n"
    )
