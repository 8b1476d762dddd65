"""CPU seconds the node processes spend moving keys (issue 12's "Measure", in CPU time).

Wall-clock throughput on a shared 2-core machine moves with whatever else runs; CPU seconds
per key moved move much less. The bench samples the summed CPU of every node process (the
sources, the target members, their replicas) with the foreground operation count at each
poll, then for a window (copy: floor to flip; cleaning: flip to done) takes the CPU spent
in it minus what the foreground operations of that window cost at the baseline rate (node
CPU per operation measured without a migration). What remains is the migration's own cost.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

from shardkv.cluster.launcher import LocalCluster

from bench.proc_stats import process_cpu_seconds


class NodeCpu:
    """Samples of (wall time, node CPU seconds, foreground ops so far)."""

    def __init__(self, cluster: LocalCluster, ops: Callable[[], int]) -> None:
        self.cluster = cluster
        self.ops = ops
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.op_counts: list[int] = []
        # Last reading per node: a process that exits (a retired member) keeps what it used.
        self._last: dict[str, float] = {}
        self.by_node: dict[str, list[float]] = {}

    def _read(self) -> None:
        for spec in self.cluster.plan.nodes:
            pid = self.cluster.pid_of(spec.id)
            if pid is None:
                continue
            try:
                self._last[spec.id] = process_cpu_seconds(pid)
            except (OSError, ValueError):
                pass

    def sample(self) -> None:
        self._read()
        self.times.append(time.time())
        self.cpu.append(sum(self._last.values()))
        self.op_counts.append(self.ops())
        for node in self._last:
            # A node that appears later had used nothing before.
            series = self.by_node.setdefault(node, [0.0] * (len(self.times) - 1))
            series.append(self._last[node])

    def node_window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds of each node between two wall times (foreground included)."""
        return {node: round(self._at(series, end) - self._at(series, start), 2)
                for node, series in sorted(self.by_node.items())}

    def _at(self, series: list[float] | list[int], when: float) -> float:
        """Linear interpolation of ``series`` at wall time ``when``."""
        times = self.times
        i = bisect.bisect_left(times, when)
        if i <= 0:
            return float(series[0])
        if i >= len(times):
            return float(series[-1])
        t0, t1 = times[i - 1], times[i]
        share = (when - t0) / (t1 - t0) if t1 > t0 else 1.0
        return series[i - 1] + (series[i] - series[i - 1]) * share

    def window(self, start: float, end: float) -> tuple[float, float]:
        """(node CPU seconds, foreground ops) between two wall times."""
        return (self._at(self.cpu, end) - self._at(self.cpu, start),
                self._at(self.op_counts, end) - self._at(self.op_counts, start))


def migration_cpu(track: NodeCpu, start: float, end: float, cpu_per_op: float) -> float:
    """Node CPU seconds in ``start..end`` that the foreground load does not explain."""
    cpu, ops = track.window(start, end)
    return max(0.0, cpu - ops * cpu_per_op)
