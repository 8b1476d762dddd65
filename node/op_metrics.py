"""Operations served and their latency: plain counters on the hot path, Prometheus at scrape.

Every request (a REST or rpc get or put) counted itself through ``prometheus_client``: a
``Counter`` child's ``inc`` and a ``Histogram`` child's ``observe``, three lock round trips
and a Python loop over the buckets, about 2.5 us of a put's CPU (issue 17). Here a request
adds one to a dict entry, one to a bucket found by bisection and its latency to a sum, all on
the event loop; ``collect`` turns them into the same families, with the same names, labels,
buckets and ``_created`` samples as before (``shardkv_ops_total{op,outcome}``,
``shardkv_op_duration_seconds{op}``), when Prometheus scrapes.

``collect`` may run off the loop (a registry rendered in a thread): it copies each dict and
row in one C call each, so a scrape never sees a torn row; a scrape between a request's
count and its latency may show the one without the other, which the next scrape settles.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class OpMetrics(Collector):
    """``shardkv_ops_total`` and ``shardkv_op_duration_seconds``; ``observe`` per request."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(sorted(buckets))
        self._labels = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]
        self._counts: dict[tuple[str, str], int] = {}  # (op, outcome) -> served
        self._rows: dict[str, list[int]] = {}  # op -> per bucket (not cumulative), +Inf last
        self._sums: dict[str, float] = {}  # op -> seconds
        self._created: dict[object, float] = {}  # a series -> when it was first counted

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        """Count one served operation and its latency (hot path)."""
        key = (op, outcome)
        counts = self._counts
        if key in counts:
            counts[key] += 1
        else:
            self._created[key] = time.time()
            counts[key] = 1
        row = self._rows.get(op)
        if row is None:
            self._created[op] = time.time()
            self._sums[op] = 0.0
            row = self._rows[op] = [0] * (len(self._bounds) + 1)
        row[bisect_left(self._bounds, seconds)] += 1  # le is inclusive: value <= bound
        self._sums[op] += seconds

    def collect(self) -> Iterator[Metric]:
        created = dict(self._created)
        ops = CounterMetricFamily("shardkv_ops", "Operations served, by op and outcome (ok "
                                  "or the error code).", labels=["op", "outcome"])
        for (op, outcome), value in list(self._counts.items()):
            ops.add_metric([op, outcome], float(value), created=created.get((op, outcome)))
        yield ops
        name = "shardkv_op_duration_seconds"
        latency = HistogramMetricFamily(name, "Time to serve one operation, by op.",
                                        labels=["op"])
        sums = dict(self._sums)
        for op, row in list(self._rows.items()):
            total, buckets = 0, []
            for label, count in zip(self._labels, list(row), strict=True):
                total += count
                buckets.append((label, float(total)))
            latency.add_metric([op], buckets, sums.get(op, 0.0))
            if op in created:
                latency.add_sample(f"{name}_created", {"op": op}, created[op])
        yield latency
