"""Lost writes, staleness, counters, convergence and availability on synthetic histories."""

from __future__ import annotations

from shardkv.chaos.checkers.availability import check_availability, fault_windows
from shardkv.chaos.checkers.convergence import check_convergence
from shardkv.chaos.checkers.counters import check_counters
from shardkv.chaos.checkers.lost_writes import check_lost_writes
from shardkv.chaos.checkers.staleness import check_staleness
from shardkv.chaos.history import NemesisEvent
from shardkv.chaos.synthetic import op


def final_read(id, output, version=None, key="k", at=100.0):
    return op(id, "read", None, at, at + 0.01, output=output, version=version, key=key,
              final=True, consistency="strong")


# ---- lost writes -----------------------------------------------------------------------


def test_every_acknowledged_write_present_is_ok():
    ops = [
        op(0, "write", "a", 0, 1, version=3),
        op(1, "write", "b", 2, 3, version=5),
        op(2, "write", "c", 4, type="info"),  # unknown: may be the final value or not
        final_read(3, "c", version=9),
    ]
    assert check_lost_writes(ops).verdict == "ok"


def test_final_version_older_than_an_acknowledged_write_is_a_lost_write():
    ops = [
        op(0, "write", "a", 0, 1, version=3),
        op(1, "write", "b", 2, 3, version=5),
        final_read(2, "a", version=3),
    ]
    result = check_lost_writes(ops)
    assert result.verdict == "anomaly"
    assert [a["kind"] for a in result.anomalies] == ["lost-write"]


def test_absent_key_after_acknowledged_put_is_lost_unless_a_delete_explains_it():
    lost = [op(0, "write", "a", 0, 1, version=3), final_read(1, None)]
    deleted = [
        op(0, "write", "a", 0, 1, version=3),
        op(1, "delete", None, 2, type="info"),
        final_read(2, None),
    ]
    assert check_lost_writes(lost).anomalies[0]["kind"] == "lost-write"
    assert check_lost_writes(deleted).verdict == "ok"


def test_same_version_different_value_is_corruption_and_unknown_value_a_phantom():
    corrupt = [op(0, "write", "a", 0, 1, version=3), final_read(1, "zz", version=3)]
    phantom = [op(0, "write", "a", 0, 1, version=3), final_read(1, "zz", version=8)]
    assert check_lost_writes(corrupt).anomalies[0]["kind"] == "corrupt-value"
    assert check_lost_writes(phantom).anomalies[0]["kind"] == "phantom-value"


def test_appends_lost_duplicated_and_unknown():
    good = [
        op(0, "append", 1, 0, 1, version=1),
        op(1, "append", 2, 0, type="info"),
        final_read(2, [1]),
    ]
    lost = [op(0, "append", 1, 0, 1, version=1), final_read(1, [])]
    doubled = [op(0, "append", 1, 0, 1, version=1), final_read(1, [1, 1])]
    no_final = [op(0, "append", 1, 0, 1, version=1)]
    assert check_lost_writes(good).verdict == "ok"
    assert check_lost_writes(lost).anomalies[0]["kind"] == "lost-write"
    assert check_lost_writes(doubled).anomalies[0]["kind"] == "duplicated-write"
    assert check_lost_writes(no_final).verdict == "unknown"


# ---- staleness -------------------------------------------------------------------------


def eventual(id, call, output, version, bound_ms=500.0):
    return op(id, "read", None, call, call + 0.01, output=output, version=version,
              consistency="eventual", max_staleness_ms=bound_ms)


def test_read_within_its_staleness_bound_is_ok():
    ops = [
        op(0, "write", "a", 0.0, 0.1, version=1),
        op(1, "write", "b", 1.0, 1.1, version=2),
        eventual(2, 1.3, "a", 1),  # b acknowledged 200 ms before: within 500 ms
        eventual(3, 5.0, "b", 2),
    ]
    result = check_staleness(ops)
    assert result.verdict == "ok"
    assert result.stats["eventual_reads_checked"] == 2
    assert 199 < result.stats["lag_ms_max"] < 201


def test_read_older_than_its_bound_is_stale():
    ops = [
        op(0, "write", "a", 0.0, 0.1, version=1),
        op(1, "write", "b", 1.0, 1.1, version=2),
        eventual(2, 2.0, "a", 1),  # b acknowledged 900 ms before the read began
    ]
    result = check_staleness(ops)
    assert result.verdict == "anomaly"
    assert result.anomalies[0]["kind"] == "stale-read"
    assert result.anomalies[0]["lag_ms"] == 900.0
    assert check_staleness(ops, slack_ms=500).verdict == "ok"


def test_write_in_flight_does_not_bound_a_read_and_absence_is_checked():
    ops = [
        op(0, "write", "a", 0.0, 5.0, version=1),  # acknowledged only at 5.0
        eventual(1, 2.0, None, None),
        eventual(2, 6.0, None, None, bound_ms=2000),
        eventual(3, 9.0, None, None),  # a acknowledged 4 s earlier: absent is stale
    ]
    result = check_staleness(ops)
    assert [a["read"]["id"] for a in result.anomalies] == [3]


def test_read_from_the_future_or_corrupted_is_caught():
    ops = [
        op(0, "write", "a", 0.0, 0.1, version=1),
        eventual(1, 1.0, "b", 2),  # b is written only later
        op(2, "write", "b", 3.0, 3.1, version=2),
        eventual(3, 4.0, "a", 2),  # version 2 carries b, not a
    ]
    kinds = [a["kind"] for a in check_staleness(ops).anomalies]
    assert kinds == ["phantom-read", "corrupt-read"]


# ---- counters --------------------------------------------------------------------------


def test_counter_with_info_increments_within_range_is_ok():
    ops = [
        op(0, "incr", 1, 0, 1, output=1, key="c"),
        op(1, "incr", 1, 0.5, type="info", key="c"),
        op(2, "incr", 1, 2, 3, output=3, key="c"),
        final_read(3, 3, key="c"),
    ]
    assert check_counters(ops).verdict == "ok"


def test_doubled_and_lost_increments():
    incrs = [op(i, "incr", 1, i, i + 0.5, output=i + 1, key="c") for i in range(3)]
    doubled = [*incrs, final_read(3, 4, key="c")]
    lost = [*incrs, final_read(3, 2, key="c")]
    assert check_counters(doubled).anomalies[0]["kind"] == "doubled-increment"
    assert check_counters(lost).anomalies[0]["kind"] == "lost-increment"


def test_two_increments_returning_the_same_value():
    ops = [
        op(0, "incr", 1, 0, 1, output=1, key="c"),
        op(1, "incr", 1, 0, 1, output=1, key="c"),
        final_read(2, 2, key="c"),
    ]
    assert check_counters(ops).anomalies[0]["kind"] == "duplicate-increment-result"


# ---- convergence -----------------------------------------------------------------------


def test_convergence():
    same = {"s1": {"n1": "abc", "n2": "abc"}, "s2": {"n3": [5, "x"], "n4": [5, "x"]}}
    diverged = {"s1": {"n1": "abc", "n2": "abd", "n3": "abc"}}
    missing = {"s1": {"n1": "abc", "n2": None}}
    assert check_convergence(same).verdict == "ok"
    result = check_convergence(diverged)
    assert result.verdict == "anomaly"
    assert "n2" in result.anomalies[0]["message"]
    assert check_convergence(missing).verdict == "unknown"


# ---- availability ----------------------------------------------------------------------


def test_availability_phases_and_failover():
    nemesis = [
        NemesisEvent(10.0, "kill", "start", ("n1",)),
        NemesisEvent(20.0, "kill", "stop", ("n1",)),
    ]
    ops = [op(i, "write", i, float(i), i + 0.01, version=i + 1) for i in range(10)]
    ops += [op(10, "write", "x", 11.0, 12.0, type="fail", error="UNAVAILABLE")]
    ops += [op(11, "write", "y", 12.5, type="info")]
    ops += [op(12, "write", "z", 14.0, 14.5, version=30)]
    ops += [op(13, "cas", [1, "w"], 21.0, 21.1, type="fail", error="VERSION_MISMATCH")]
    result = check_availability(ops, nemesis)
    stats = result.stats
    assert stats["phases"]["steady"]["answered_fraction"] == 1.0
    assert stats["phases"]["fault:kill"]["operations"] == 3
    assert stats["phases"]["fault:kill"]["ok"] == 1
    assert stats["failovers"][0]["failover_s"] == 4.5
    assert stats["failovers"][0]["affected_keys"] == 1
    assert stats["overall"]["latency_ms"]["count"] == 11


def test_a_key_the_workload_left_during_a_fault_is_abandoned_not_unrecovered():
    nemesis = [
        NemesisEvent(10.0, "kill", "start", ("n1",)),
        NemesisEvent(20.0, "kill", "stop", ("n1",)),
    ]
    ops = [op(0, "write", 0, 1.0, 1.1, version=1, key="old")]
    ops += [op(1, "write", 1, 11.0, 12.0, type="fail", error="UNAVAILABLE", key="old")]
    ops += [op(2, "write", 2, 13.0, 14.0, version=2, key="new")]
    failover = check_availability(ops, nemesis).stats["failovers"][0]
    assert failover["abandoned_keys"] == 1
    assert failover["failover_s"] == 0.0
    # The same key still used after the fault and never answered again: never recovered.
    ops += [op(3, "write", 3, 25.0, 26.0, type="fail", error="UNAVAILABLE", key="old")]
    failover = check_availability(ops, nemesis).stats["failovers"][0]
    assert failover["failover_s"] is None


def test_fault_windows_pair_starts_with_stops_and_heal():
    events = [
        NemesisEvent(1.0, "partition", "start", ("n1",)),
        NemesisEvent(2.0, "pause", "start", ("n2",)),
        NemesisEvent(3.0, "partition", "stop", ("n1",)),
        NemesisEvent(4.0, "all", "heal"),
        NemesisEvent(5.0, "kill", "start", ("n3",)),
    ]
    windows = fault_windows(events, run_end=9.0)
    assert [(w.fault, w.start, w.end) for w in windows] == [
        ("partition", 1.0, 3.0), ("pause", 2.0, 4.0), ("kill", 5.0, 9.0)
    ]


def test_a_key_left_after_the_stop_but_before_the_service_was_back_is_abandoned():
    # The stop is when the restart was issued; the node answered again only at 22.
    nemesis = [
        NemesisEvent(10.0, "kill", "start", ("n1",)),
        NemesisEvent(20.0, "kill", "stop", ("n1",)),
    ]
    ops = [op(0, "write", 0, 11.0, 11.5, type="fail", error="UNAVAILABLE", key="left")]
    ops += [op(1, "write", 1, 21.0, 21.5, type="fail", error="UNAVAILABLE", key="left")]
    ops += [op(2, "write", 2, 12.0, 12.5, type="fail", error="UNAVAILABLE", key="kept")]
    ops += [op(3, "write", 3, 21.8, 22.0, version=2, key="kept")]
    failover = check_availability(ops, nemesis).stats["failovers"][0]
    assert (failover["affected_keys"], failover["abandoned_keys"]) == (2, 1)
    assert failover["failover_s"] == 12.0
    # Still used after the service was back and never answered: never recovered.
    ops += [op(4, "write", 4, 23.0, 23.5, type="fail", error="UNAVAILABLE", key="left")]
    assert check_availability(ops, nemesis).stats["failovers"][0]["failover_s"] is None
