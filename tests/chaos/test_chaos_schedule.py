"""Seeded schedules replay exactly; running one records and always heals."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.chaos.history import History
from shardkv.chaos.nemesis.delay_proxy import DelayProxy, LinkFaults, ProxyPartitioner
from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.chaos.nemesis.process import ProcessNemesis
from shardkv.chaos.nemesis.schedule import (
    FaultSpec,
    Schedule,
    ScheduledFault,
    generate_schedule,
    run_schedule,
)

NODES = ["n1", "n2", "n3", "n4", "n5"]
SPECS = [
    FaultSpec("kill", "one"),
    FaultSpec("pause", "minority"),
    FaultSpec("partition", "one", shape="isolate"),
    FaultSpec("partition", "none", shape="majorities-ring"),
    FaultSpec("delay", "majority", params={"delay_ms": 200}),
]


def test_same_seed_same_schedule_and_exact_json_round_trip(tmp_path):
    a = generate_schedule(42, 300, SPECS, NODES)
    b = generate_schedule(42, 300, SPECS, NODES)
    assert a == b
    assert len(a.faults) > 10
    path = tmp_path / "schedule.json"
    a.dump(path)
    assert Schedule.load(path) == a
    assert generate_schedule(43, 300, SPECS, NODES) != a


def test_schedule_shape():
    schedule = generate_schedule(7, 120, SPECS, NODES, settle_s=10)
    end = 0.0
    for fault in schedule.faults:
        assert fault.at_s >= end  # one window at a time
        end = fault.at_s + fault.duration_s
        assert set(fault.targets) <= set(NODES)
        if fault.fault == "partition":
            grudge = fault.params["grudge"]
            assert all(node not in peers for node, peers in grudge.items())
    assert end <= 110
    ring = [f for f in generate_schedule(1, 600, SPECS[3:4], NODES).faults]
    for fault in ring:  # every node still sees a majority (itself included)
        assert all(len(NODES) - len(peers) >= 3 for peers in fault.params["grudge"].values())


async def test_run_schedule_records_and_heals():
    async def noop(reader, writer):
        writer.close()

    server = await asyncio.start_server(noop, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[:2]
    links = {(s, d): DelayProxy(*upstream) for s in ("a", "b") for d in ("a", "b") if s != d}
    for proxy in links.values():
        await proxy.start()
    checks = []

    async def health() -> None:
        checks.append(len(checks))

    schedule = Schedule(0, 1.0, (
        ScheduledFault(0.0, "delay", ("a",), 0.05, {"delay_ms": 30}),
        ScheduledFault(0.1, "partition", ("a",), 0.05,
                       {"grudge": {"a": ["b"], "b": ["a"]}}),
    ))
    history = History()
    try:
        nemeses = {"delay": ProxyPartitioner(links, "delay"), "partition": ProxyPartitioner(links)}
        await run_schedule(schedule, nemeses, history, health_check=health)
        assert [(e.fault, e.action) for e in history.nemesis] == [
            ("delay", "start"), ("delay", "stop"), ("partition", "start"),
            ("partition", "stop"), ("all", "heal"),
        ]
        assert history.nemesis[2].detail["blackholed"]
        assert len(checks) == 4
        assert all(p.faults == LinkFaults() for p in links.values())
    finally:
        for proxy in links.values():
            await proxy.close()
        server.close()


async def test_a_failing_fault_still_heals_everything():
    links = {("a", "b"): DelayProxy("127.0.0.1", 9)}  # never connected to: no traffic
    delay = ProxyPartitioner(links, "delay")
    broken = ProcessNemesis("pause", lambda _name: 2**22 + 7)  # no such pid
    schedule = Schedule(0, 1.0, (
        ScheduledFault(0.0, "delay", ("a",), 0.01, {"delay_ms": 10}),
        ScheduledFault(0.02, "pause", ("a",), 0.01),
    ))
    history = History()
    with pytest.raises(NemesisError):
        await run_schedule(schedule, {"delay": delay, "pause": broken}, history)
    assert history.nemesis[-1].action == "heal"
    assert links[("a", "b")].faults == LinkFaults()


async def test_unknown_nemesis_is_refused_before_anything_runs():
    schedule = Schedule(0, 1.0, (ScheduledFault(0.0, "meteor", ("a",), 0.01),))
    history = History()
    with pytest.raises(KeyError):
        await run_schedule(schedule, {}, history)
    assert history.nemesis == []
