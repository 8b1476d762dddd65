"""The request metrics counted as plain numbers and folded into Prometheus at scrape time
(``node/op_metrics.py``) export exactly what ``prometheus_client``'s own ``Counter`` and
``Histogram`` exported for the same requests: names, labels, buckets, counts, sums, and a
``_created`` sample per series (whose value is a time, so only its presence is compared)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from shardkv.node.metrics import LATENCY_BUCKETS, NodeMetrics
from shardkv.node.op_metrics import OpMetrics

Request = tuple[str, str, float]

requests = st.lists(
    st.tuples(
        st.sampled_from(["get", "put", "delete", "batch"]),
        st.sampled_from(["ok", "NOT_FOUND", "VERSION_MISMATCH"]),
        st.one_of(st.sampled_from(LATENCY_BUCKETS),  # exactly on a bound: le is inclusive
                  st.floats(min_value=0.0, max_value=10.0, allow_nan=False)),
    ),
    max_size=60,
)


def exported(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if not sample.name.startswith(("shardkv_ops", "shardkv_op_duration")):
                continue
            value = 0.0 if sample.name.endswith("_created") else sample.value
            out[(sample.name, tuple(sorted(sample.labels.items())))] = value
    return out


def through_prometheus_client(seen: list[Request]) -> CollectorRegistry:
    registry = CollectorRegistry()
    ops = Counter("shardkv_ops", "Operations served, by op and outcome (ok or the error "
                  "code).", ["op", "outcome"], registry=registry)
    latency = Histogram("shardkv_op_duration_seconds", "Time to serve one operation, by op.",
                        ["op"], buckets=LATENCY_BUCKETS, registry=registry)
    for op, outcome, seconds in seen:
        ops.labels(op, outcome).inc()
        latency.labels(op).observe(seconds)
    return registry


@settings(max_examples=60, deadline=None)
@given(requests)
def test_the_scrape_shows_what_prometheus_clients_metrics_showed(seen: list[Request]) -> None:
    registry = CollectorRegistry()
    counted = OpMetrics(LATENCY_BUCKETS)
    registry.register(counted)
    for op, outcome, seconds in seen:
        counted.observe(op, outcome, seconds)
    ours, theirs = exported(registry), exported(through_prometheus_client(seen))
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert abs(ours[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_the_node_metrics_observe_is_the_counters_own() -> None:
    metrics = NodeMetrics()
    metrics.observe("put", "ok", 0.0003)
    metrics.observe("put", "VERSION_MISMATCH", 0.002)
    text = metrics.render().decode()
    assert 'shardkv_ops_total{op="put",outcome="ok"} 1.0' in text
    assert 'shardkv_op_duration_seconds_bucket{le="0.0005",op="put"} 1.0' in text
    assert 'shardkv_op_duration_seconds_count{op="put"} 2.0' in text
    assert "shardkv_op_duration_seconds_created" in text
