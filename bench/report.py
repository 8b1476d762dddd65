"""Turning runs into figures: medians per cell, shardkv/etcd ratios, batch/single ratios, the
issue's targets, and a table for people (the JSON carries the same and every run).

A *cell* is one (system, variant, kind, workload, concurrency). With ``--runs N`` each cell is
measured N times and every metric is reported as its median over the runs (the median of
p99s, not the p99 of all requests: a noisy run moves it less).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bench.loadgen import LoadResult

CellKey = tuple[str, str, str, str, int]  # system, variant, kind, workload, concurrency

MEDIAN_FIELDS = (
    "requests_per_s",
    "keys_per_s",
    "p50_ms",
    "p99_ms",
    "mean_ms",
    "generator_cpu_cores",
    "server_cpu_cores",
    "server_rss_bytes",
)


def cell_key(result: LoadResult) -> CellKey:
    return (result.system, result.variant, result.kind, result.workload, result.concurrency)


def medians(results: list[LoadResult]) -> list[dict[str, Any]]:
    """One row per cell, in the order cells were first measured."""
    grouped: dict[CellKey, list[LoadResult]] = defaultdict(list)
    for result in results:
        grouped[cell_key(result)].append(result)
    rows = []
    for key, runs in grouped.items():
        system, variant, kind, workload, concurrency = key
        row: dict[str, Any] = {
            "system": system,
            "variant": variant,
            "kind": kind,
            "workload": workload,
            "concurrency": concurrency,
            "runs": len(runs),
            "errors": sum(r.errors for r in runs),
            "requests": sum(r.requests for r in runs),
        }
        for name in MEDIAN_FIELDS:
            values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
            row[name] = statistics.median(values) if values else None
        # Server CPU per key: how much work one key costs the server, whatever the load
        # around it (a busy machine lowers throughput far more than it changes this).
        per_key = [
            r.server_cpu_cores * 1e6 / r.keys_per_s
            for r in runs
            if r.server_cpu_cores is not None and r.keys_per_s
        ]
        row["server_cpu_us_per_key"] = statistics.median(per_key) if per_key else None
        server: dict[str, float | None] = {}
        for name in sorted({name for r in runs for name in r.server_metrics}):
            found = [v for r in runs if (v := r.server_metrics.get(name)) is not None]
            server[name] = statistics.median(found) if found else None
        row["server_metrics"] = server
        rows.append(row)
    return rows


def _index(rows: list[dict[str, Any]]) -> dict[CellKey, dict[str, Any]]:
    return {
        (r["system"], r["variant"], r["kind"], r["workload"], r["concurrency"]): r for r in rows
    }


def generator_of(kind: str) -> str:
    """Which load generator produced a cell: ``rest/wrk`` -> ``wrk``; plain kinds -> ``python``."""
    return kind.partition("/")[2] or "python"


def etcd_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """shardkv/etcd throughput for every shardkv cell that has an etcd cell of the same
    workload and concurrency, loaded by the same generator (keys/s, so a batch compares with
    an etcd txn of the same size).
    """
    etcd = {
        (generator_of(r["kind"]), r["workload"], r["concurrency"]): r
        for r in rows
        if r["system"] == "etcd"
    }
    ratios = []
    for row in rows:
        if row["system"] != "shardkv":
            continue
        reference = etcd.get((generator_of(row["kind"]), row["workload"], row["concurrency"]))
        if reference is None or not reference["keys_per_s"]:
            continue
        ratios.append(
            {
                "variant": row["variant"],
                "kind": row["kind"],
                "etcd_kind": reference["kind"],
                "workload": row["workload"],
                "concurrency": row["concurrency"],
                "shardkv_keys_per_s": row["keys_per_s"],
                "etcd_keys_per_s": reference["keys_per_s"],
                "ratio": row["keys_per_s"] / reference["keys_per_s"],
            }
        )
    return ratios


def batch_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keys/s of batch-of-N puts over keys/s of single puts, same system, path, concurrency.
    The issue asks >= 1.3 (30% more) and aims at >= 5."""
    index = _index(rows)
    out = []
    for (system, variant, kind, workload, concurrency), row in index.items():
        if workload != "batch":
            continue
        single = index.get((system, variant, kind, "put", concurrency))
        if single is None or not single["keys_per_s"]:
            continue
        out.append(
            {
                "system": system,
                "variant": variant,
                "kind": kind,
                "concurrency": concurrency,
                "batch_keys_per_s": row["keys_per_s"],
                "put_keys_per_s": single["keys_per_s"],
                "ratio": row["keys_per_s"] / single["keys_per_s"],
                # how much less server CPU a key costs in a batch than alone
                "cpu_per_key_ratio": (
                    single["server_cpu_us_per_key"] / row["server_cpu_us_per_key"]
                    if single["server_cpu_us_per_key"] and row["server_cpu_us_per_key"]
                    else None
                ),
            }
        )
    return out


@dataclass(frozen=True, slots=True)
class TargetCheck:
    name: str
    wanted: float
    ratio: float | None

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= self.wanted

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "wanted": self.wanted, "ratio": self.ratio, "met": self.met}


def target_checks(rows: list[dict[str, Any]]) -> list[TargetCheck]:
    """The issue's targets, at the highest concurrency measured for both systems:
    /v1/rpc put fsync=always >= 1.0x etcd put; /v1/rpc get >= 2x etcd range;
    batch-of-100 >= 1.3x single puts (aim 5x)."""
    ratios = etcd_ratios(rows)

    def etcd_ratio(workload: str) -> tuple[int | None, float | None]:
        found = [
            r
            for r in ratios
            if r["kind"] == "rpc" and r["variant"] == "fsync=always" and r["workload"] == workload
        ]
        if not found:
            return None, None
        best = max(found, key=lambda r: r["concurrency"])
        return best["concurrency"], best["ratio"]

    checks = []
    c, ratio = etcd_ratio("put")
    checks.append(TargetCheck(f"rpc put fsync=always c={c} vs etcd put", 1.0, ratio))
    c, ratio = etcd_ratio("get")
    checks.append(TargetCheck(f"rpc get c={c} vs etcd range", 2.0, ratio))
    batches = [
        b
        for b in batch_ratios(rows)
        if b["system"] == "shardkv" and b["kind"] == "rpc" and b["variant"] == "fsync=always"
    ]
    if batches:
        best = max(batches, key=lambda b: b["concurrency"])
        name = f"rpc batch vs single puts fsync=always c={best['concurrency']}"
        checks.append(TargetCheck(name + " (asked)", 1.3, best["ratio"]))
        checks.append(TargetCheck(name + " (aim)", 5.0, best["ratio"]))
    return checks


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The human table: one line per cell, with its ratio to etcd where there is one."""
    ratio_of = {
        (r["variant"], r["kind"], r["workload"], r["concurrency"]): r["ratio"]
        for r in etcd_ratios(rows)
    }
    header = (
        "system", "variant", "path", "workload", "conc", "req/s", "keys/s", "p50 ms", "p99 ms",
        "errors", "gen cpu", "srv cpu", "us/key", "fsync ms", "w/group", "vs etcd",
    )  # fmt: skip
    lines = [header]
    for r in rows:
        ratio = ratio_of.get((r["variant"], r["kind"], r["workload"], r["concurrency"]))
        lines.append(
            (
                r["system"],
                r["variant"],
                r["kind"],
                r["workload"],
                str(r["concurrency"]),
                _fmt(r["requests_per_s"]),
                _fmt(r["keys_per_s"]),
                _fmt(r["p50_ms"], 2),
                _fmt(r["p99_ms"], 2),
                str(r["errors"]),
                _fmt(r["generator_cpu_cores"], 2),
                _fmt(r["server_cpu_cores"], 2),
                _fmt(r["server_cpu_us_per_key"], 1),
                _fmt(r["server_metrics"].get("fsync_mean_ms"), 2),
                _fmt(r["server_metrics"].get("entries_per_group"), 1),
                (f"{ratio:.2f}x" if r["system"] == "shardkv" and ratio is not None else ""),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = set(range(4, len(header)))
    out = []
    for n, line in enumerate(lines):
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def summary(rows: list[dict[str, Any]]) -> str:
    """Batch/single ratios and the targets, after the table."""
    out = []
    batches = batch_ratios(rows)
    if batches:
        out.append("batch of puts vs single puts (keys/s):")
        for b in batches:
            cpu = b["cpu_per_key_ratio"]
            out.append(
                f"  {b['system']} {b['variant'] or ''} {b['kind']} c={b['concurrency']}: "
                f"{b['ratio']:.1f}x ({_fmt(b['batch_keys_per_s'])} vs "
                f"{_fmt(b['put_keys_per_s'])} keys/s)"
                + (f"; server CPU per key {cpu:.1f}x lower" if cpu else "")
            )
    checks = target_checks(rows)
    if any(check.ratio is not None for check in checks):
        out.append("targets:")
        for check in checks:
            if check.ratio is None:
                continue
            verdict = "met" if check.met else "NOT met"
            out.append(f"  {check.name}: {check.ratio:.2f}x (want >= {check.wanted}x) {verdict}")
    return "\n".join(out)
