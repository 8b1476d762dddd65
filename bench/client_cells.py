"""The client benchmark's figures: one ``Cell`` per (system, workload, concurrency, client
processes), medians over ``--runs``, and the shardkv/etcd and shardkv/redis ratios.

Each metric's median is taken on its own over the runs (the median of p99s, not the p99 of all
requests), as ``bench.report`` does for the node benchmark. A ratio pairs a shardkv cell with
the reference cell of the same workload, concurrency and client processes; redis-benchmark is
one process whatever the shardkv side used, so its cells pair on workload and concurrency.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Any

REDIS_PREFIX = "redis"
ETCD_PREFIX = "etcd"
SHARDKV_PREFIX = "shardkv"


@dataclass
class Cell:
    """One measured cell. ``gen_cpu_cores``: cores the load generator used on average over
    the window (its processes' getrusage); ``server_cpu_cores``: the server's (for etcd, the
    leader's; unknown for the shardkv cluster's many processes and for redis)."""

    system: str
    workload: str
    concurrency: int
    processes: int
    ops: int
    errors: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    gen_cpu_cores: float | None = None
    server_cpu_cores: float | None = None

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.system, self.workload, self.concurrency, self.processes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ops_per_s": self.ops_per_s}


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds (None for no samples)."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index] * 1000


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def medians(cells: list[Cell]) -> list[Cell]:
    """One cell per key, in first-measured order; ``ops`` is rescaled so that ``ops_per_s``
    is the median throughput, every other metric its own median."""
    grouped: dict[tuple[str, str, int, int], list[Cell]] = defaultdict(list)
    for cell in cells:
        grouped[cell.key].append(cell)
    out = []
    for group in grouped.values():
        first = group[0]
        rate = statistics.median(c.ops_per_s for c in group)
        seconds = statistics.median(c.seconds for c in group)
        out.append(Cell(
            first.system, first.workload, first.concurrency, first.processes,
            ops=round(rate * seconds), errors=sum(c.errors for c in group), seconds=seconds,
            p50_ms=_median([c.p50_ms for c in group]), p99_ms=_median([c.p99_ms for c in group]),
            gen_cpu_cores=_median([c.gen_cpu_cores for c in group]),
            server_cpu_cores=_median([c.server_cpu_cores for c in group]),
        ))  # fmt: skip
    return out


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    """For each shardkv cell: its ops/s over each reference system's in the same shape."""
    systems = list(dict.fromkeys(c.system for c in cells))
    references = [s for s in systems if not s.startswith(SHARDKV_PREFIX)]
    rows = []
    for cell in cells:
        if not cell.system.startswith(SHARDKV_PREFIX):
            continue
        row: dict[str, Any] = {"workload": cell.workload, "concurrency": cell.concurrency,
                               "processes": cell.processes, "shardkv_ops_per_s": cell.ops_per_s}
        for ref in references:
            match = next((c for c in cells if c.system == ref and c.workload == cell.workload
                          and c.concurrency == cell.concurrency
                          and (c.processes == cell.processes or ref.startswith(REDIS_PREFIX))),
                         None)
            rate = match.ops_per_s if match else None
            row[ref] = {"ops_per_s": rate,
                        "shardkv_over": cell.ops_per_s / rate if rate else None}
        rows.append(row)
    return rows


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(cells: list[Cell]) -> str:
    lines = [f"{'system':<34} {'workload':<8} {'conc':>4} {'procs':>5} {'ops/s':>9} "
             f"{'p50 ms':>8} {'p99 ms':>8} {'gen cpu':>7} {'srv cpu':>7} {'errors':>6}"]
    for c in cells:
        lines.append(f"{c.system:<34} {c.workload:<8} {c.concurrency:>4} {c.processes:>5} "
                     f"{c.ops_per_s:>9,.0f} {_num(c.p50_ms, '.2f'):>8} "
                     f"{_num(c.p99_ms, '.2f'):>8} {_num(c.gen_cpu_cores, '.2f'):>7} "
                     f"{_num(c.server_cpu_cores, '.2f'):>7} {c.errors:>6}")
    return "\n".join(lines)


def render_ratios(rows: list[dict[str, Any]]) -> str:
    """shardkv's ops/s over each reference's, per shape (x1.00 = as fast)."""
    if not rows:
        return ""
    references = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    header = f"{'workload':<8} {'conc':>4} {'procs':>5} {'shardkv':>9}"
    for ref in references:
        header += f" | {ref[:30]:>30} {'ratio':>6}"
    lines = [header]
    for row in rows:
        line = (f"{row['workload']:<8} {row['concurrency']:>4} {row['processes']:>5} "
                f"{row['shardkv_ops_per_s']:>9,.0f}")
        for ref in references:
            figures = row[ref]
            ratio = figures["shardkv_over"]
            line += (f" | {_num(figures['ops_per_s'], ',.0f'):>30} "
                     f"{'-' if ratio is None else f'x{ratio:.2f}':>6}")
        lines.append(line)
    return "\n".join(lines)


def cell_from_dict(raw: dict[str, Any]) -> Cell:
    names = {f.name for f in fields(Cell)}
    return Cell(**{k: v for k, v in raw.items() if k in names})
