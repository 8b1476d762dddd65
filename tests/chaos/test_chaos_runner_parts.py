"""The runner's pure parts: error classification, durations, scenarios, schedules."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from shardkv.chaos.cli import parse_duration
from shardkv.chaos.history import History
from shardkv.chaos.nemesis.schedule import generate_schedule, run_schedule
from shardkv.chaos.scenarios import SCENARIOS, describe_scenarios, get_scenario
from shardkv.chaos.workloads.recorder import Outcome, Recorder, classify_error
from shardkv.client import ConnectionFailed
from shardkv.cluster.errors import (
    NotPrimary,
    StaleMap,
    Timeout,
    Unavailable,
    VersionMismatch,
)


@pytest.mark.parametrize(
    ("error", "read", "expected"),
    [
        (VersionMismatch("x"), False, "fail"),
        (NotPrimary("x"), False, "fail"),
        (StaleMap("x"), False, "fail"),
        (ConnectionFailed("refused", maybe_executed=False), False, "fail"),
        (ConnectionFailed("dropped", maybe_executed=True), False, "info"),
        (Timeout("x"), False, "info"),
        (Unavailable("no majority"), False, "info"),
        (RuntimeError("unexpected"), False, "info"),
        (Timeout("x"), True, "fail"),  # a read has no effect: never info
    ],
)
def test_only_definite_refusals_are_fail(error: Exception, read: bool, expected: str) -> None:
    assert classify_error(error, read=read) == expected


async def test_recorder_retires_a_process_after_info() -> None:
    history = History()
    recorder = Recorder(history)
    process = recorder.new_process()
    first = process.id

    async def ok() -> Outcome:
        return Outcome(None, 7)

    async def lost() -> Outcome:
        raise Timeout("no answer")

    done = await recorder.record(process, "write", "k", "v1", ok, model="register")
    assert done == Outcome(None, 7)
    assert process.id == first
    assert await recorder.record(process, "write", "k", "v2", lost, model="register") is None
    assert process.id != first  # the next operation runs under a fresh process
    ops = history.operations()
    assert [(o.type, o.version, o.error) for o in ops] == [
        ("ok", 7, None), ("info", None, "TIMEOUT")]
    assert recorder.counts == {"ok": 1, "fail": 0, "info": 1}


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1m30s", 90.0), ("0.5s", 0.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0s", "-5s", "5h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_every_scenario_has_a_schedule_that_replays() -> None:
    nodes = ["n1", "n2", "n3"]
    for scenario in SCENARIOS.values():
        a = generate_schedule(7, scenario.duration_s, scenario.faults, nodes,
                              quiet_s=scenario.quiet_s, fault_s=scenario.fault_s)
        b = generate_schedule(7, scenario.duration_s, scenario.faults, nodes,
                              quiet_s=scenario.quiet_s, fault_s=scenario.fault_s)
        assert a == b, scenario.name
        if scenario.faults:  # control-counters needs none: its bug is in every increment
            assert a.faults, f"{scenario.name} schedules no fault in {scenario.duration_s} s"
        assert {f.fault for f in a.faults} <= {f.name for f in scenario.faults}


def test_standalone_topology_only_for_single_node_faults() -> None:
    solo = get_scenario("smoke").with_topology("standalone")
    assert solo.shape.topology == "standalone"
    assert "eventual" not in solo.mix.workers  # no replica to read from
    with pytest.raises(ValueError, match="replicated cluster"):
        get_scenario("partition-primary").with_topology("standalone")
    wal = get_scenario("wal-damage").with_topology("standalone")
    assert wal.faults[0].params["mode"] == "garbage"  # only damage a lone node survives
    with pytest.raises(ValueError, match="unknown scenario"):
        get_scenario("nope")
    listing = describe_scenarios()
    assert all(name in listing for name in SCENARIOS)


class RecordingNemesis:
    """An in-process nemesis whose detail uses the names ``record_nemesis`` takes itself."""

    name = "odd"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self, targets: Any, **params: Any) -> dict[str, Any]:
        self.calls.append("start")
        return {"action": "kill", "targets": ["x"], "fault": "y"}

    async def stop(self) -> dict[str, Any]:
        self.calls.append("stop")
        return {"action": "restart"}

    async def heal_all(self) -> None:
        self.calls.append("heal")


async def test_schedule_records_details_that_collide_with_its_own_names() -> None:
    from shardkv.chaos.nemesis.schedule import Schedule, ScheduledFault

    history = History()
    nemesis = RecordingNemesis()
    schedule = Schedule(1, 1.0, (ScheduledFault(0.0, "odd", ("n1",), 0.01),))
    await run_schedule(schedule, {"odd": nemesis}, history)
    assert nemesis.calls == ["start", "stop", "heal"]
    start, stop, heal = history.nemesis
    assert (start.action, start.targets, start.detail["detail_action"]) == (
        "start", ("n1",), "kill")
    assert stop.detail == {"detail_action": "restart"}
    assert heal.action == "heal"


def test_append_keys_rotate_and_stay_in_the_final_reads() -> None:
    import random

    from shardkv.chaos.workloads.kinds import AppendWorkload, Context

    workload = AppendWorkload(Context(Recorder(History())), key_count=2, max_elements=5)
    rng = random.Random(3)
    chosen = [workload._key_for_append(rng) for _ in range(40)]
    per_key = {k: chosen.count(k) for k in set(chosen)}
    assert max(per_key.values()) <= 5  # no list grows past its bound
    assert len(per_key) >= 8  # 40 appends over lists of at most 5
    assert set(per_key) <= set(workload.keys())  # every key used gets a final read


def test_the_answering_node_survives_the_jsonl_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shardkv.chaos.history import load_history

    history = History()
    index = history.invoke(1, "read", "k", None, consistency="eventual", max_staleness_ms=500)
    history.complete(index, "ok", "v", version=3, node="n2")
    history.dump(tmp_path / "h.jsonl")
    (op,) = load_history(tmp_path / "h.jsonl").operations()
    assert (op.node, op.version, op.output) == ("n2", 3, "v")
    assert " @n2 [" in op.describe()
