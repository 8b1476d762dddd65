"""Cluster events derived from consecutive maps (coordinator/cluster_events.py), the bounded
event log with its slow-consumer cut-off (event_log.py), and the stats arithmetic behind the
dashboard's charts (node_stats.py)."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.cluster.cluster_map import ClusterMap, NodeInfo, RingSpec, ShardInfo
from shardkv.cluster.errors import InvalidArgument
from shardkv.cluster.migration_record import MigrationRecord
from shardkv.coordinator.cluster_events import CLUSTER_EVENT_TYPES, diff_maps
from shardkv.coordinator.event_log import ClusterEventLog
from shardkv.coordinator.events_api import parse_query
from shardkv.coordinator.node_stats import fill_lag, parse_metrics, quantile_from_buckets


def _map(version: int, *, primary: str = "n1", epoch: int = 1, members: tuple = ("n1", "n2"),
         n2_status: str = "up", ring_version: int = 1,
         migration: MigrationRecord | None = None) -> ClusterMap:
    return ClusterMap(
        version=version,
        ring=RingSpec(version=ring_version, shards={"s1": 1}),
        shards={"s1": ShardInfo(epoch=epoch, primary=primary, members=list(members))},
        nodes={"n1": NodeInfo(url="http://n1", shard="s1",
                              role="primary" if primary == "n1" else "replica"),
               "n2": NodeInfo(url="http://n2", shard="s1", status=n2_status,
                              role="primary" if primary == "n2" else "replica")},
        migration=migration,
    )


def _types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_a_failover_names_the_old_and_new_primary_and_the_epoch() -> None:
    events = diff_maps(_map(5), _map(6, primary="n2", epoch=2), at=100.0)
    failover = next(e for e in events if e["type"] == "shard.failover")
    assert failover == {"type": "shard.failover", "shard": "s1", "old_primary": "n1",
                        "new_primary": "n2", "epoch": 2, "old_epoch": 1, "map_version": 6,
                        "time": 100.0}


def test_a_first_primary_is_an_assignment_not_a_failover() -> None:
    before = _map(2)
    before.shards["s1"].primary = None
    assert _types(diff_maps(before, _map(3), at=1.0)) == ["shard.primary"]


def test_node_status_membership_and_ring_changes() -> None:
    events = diff_maps(_map(1), _map(2, n2_status="down", members=("n1",), ring_version=2),
                       at=1.0)
    assert _types(events) == ["node.down", "shard.members", "ring.changed"]
    members = events[1]
    assert members["removed"] == ["n2"] and members["added"] == []
    assert {e["map_version"] for e in events} == {2}
    assert set(_types(events)) <= set(CLUSTER_EVENT_TYPES)


def test_migration_started_progress_and_finished() -> None:
    record = MigrationRecord(id="m1", kind="add", target="s2", sources=["s1"],
                             target_ring={"s1": 1, "s2": 1})
    started = diff_maps(_map(1), _map(2, migration=record), at=1.0)
    assert _types(started) == ["migration.started"]
    moved = MigrationRecord(id="m1", kind="add", target="s2", sources=["s1"],
                            target_ring={"s1": 1, "s2": 1}, keys_moved=40, keys_total=100)
    progress = diff_maps(_map(2, migration=record), _map(3, migration=moved), at=2.0)
    assert _types(progress) == ["migration.progress"]
    assert progress[0]["keys_moved"] == 40 and progress[0]["keys_total"] == 100
    done = MigrationRecord(id="m1", kind="add", target="s2", sources=["s1"],
                           target_ring={"s1": 1, "s2": 1}, state="done", keys_moved=100)
    finished_map = _map(4)
    finished_map.migrations = [done]
    finished = diff_maps(_map(3, migration=moved), finished_map, at=3.0)
    assert _types(finished) == ["migration.state"]
    assert finished[0]["state"] == "done" and finished[0]["before"] == "copying"


def test_a_first_map_or_an_older_one_yields_nothing() -> None:
    assert diff_maps(ClusterMap(), _map(4), at=1.0) == []
    assert diff_maps(_map(4), _map(4), at=1.0) == []


async def test_the_log_keeps_a_bounded_history_and_cuts_off_a_slow_subscriber() -> None:
    log = ClusterEventLog(ready=lambda: True, history=3, queue_limit=2)
    fast, slow = log.subscribe(), log.subscribe()
    assert fast is not None and slow is not None
    for version in range(2, 6):
        log.publish([{"type": "node.up", "map_version": version}])
        while not fast.queue.empty():
            fast.queue.get_nowait()
    assert [e["map_version"] for e in log.history] == [3, 4, 5]
    assert [e["map_version"] for e in log.since(3)] == [4, 5]
    assert slow.slow and slow not in log.subscribers and log.slow_consumers == 1
    assert slow.woken.is_set() and slow.queue.qsize() == 0  # its backlog is dropped at once
    assert not fast.slow and fast in log.subscribers
    await asyncio.sleep(0)


def test_the_log_publishes_nothing_before_the_member_is_ready() -> None:
    ready = False
    log = ClusterEventLog(ready=lambda: ready)
    log.on_map(_map(1), _map(2, primary="n2", epoch=2))
    assert list(log.history) == []
    ready = True
    log.on_map(_map(2), _map(3, primary="n1", epoch=3))
    assert _types(list(log.history)) == ["shard.failover"]


@pytest.mark.parametrize("query", [{"since": "-1"}, {"since": "x"}, {"stats": "yes"},
                                   {"types": "node.up,bogus"}, {"types": ""}, {"what": "1"}])
def test_bad_feed_queries_are_refused(query: dict) -> None:
    with pytest.raises(InvalidArgument):
        parse_query(query)


def test_feed_query_defaults_and_filters() -> None:
    assert parse_query({}) == (None, False, None)
    assert parse_query({"since": "7", "stats": "1", "types": "shard.failover,node.stats"}) == (
        7, True, frozenset({"shard.failover", "node.stats"}))


METRICS = """# TYPE shardkv_ops_total counter
shardkv_ops_total{op="get",outcome="ok"} %d
shardkv_ops_total{op="put",outcome="ok"} %d
# TYPE shardkv_op_duration_seconds histogram
shardkv_op_duration_seconds_bucket{op="get",le="0.001"} %d
shardkv_op_duration_seconds_bucket{op="get",le="0.01"} %d
shardkv_op_duration_seconds_bucket{op="get",le="+Inf"} %d
shardkv_op_duration_seconds_count{op="get"} %d
shardkv_op_duration_seconds_sum{op="get"} 0.5
"""


def test_ops_and_p99_come_from_counter_and_bucket_deltas() -> None:
    before = parse_metrics(METRICS % (10, 5, 10, 10, 10, 10))
    # 100 more gets: 90 under 1 ms, 9 under 10 ms, 1 slower.
    now = parse_metrics(METRICS % (110, 5, 100, 109, 110, 110))
    assert now.ops - before.ops == 100
    assert quantile_from_buckets(before.buckets, now.buckets, 0.5) == 0.001
    assert quantile_from_buckets(before.buckets, now.buckets, 0.99) == 0.01
    assert quantile_from_buckets(now.buckets, now.buckets, 0.99) is None  # nothing happened


def test_lag_is_measured_against_the_shards_primary() -> None:
    samples = [{"shard": "s1", "role": "primary", "last_lsn": 50, "lag": None},
               {"shard": "s1", "role": "replica", "last_lsn": 42, "lag": None},
               {"shard": "s2", "role": "replica", "last_lsn": 9, "lag": None}]
    fill_lag(samples)
    assert [s["lag"] for s in samples] == [0, 8, None]
