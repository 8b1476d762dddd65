"""The leader's in-memory liveness table, on a fake clock."""

from __future__ import annotations

import pytest
from shardkv.coordinator.liveness import ALIVE, DEAD, SUSPECT, UNKNOWN, Liveness


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_silence_makes_a_node_suspect_then_dead() -> None:
    clock = FakeClock()
    live = Liveness(suspect_s=2, dead_s=5, grace_s=3, clock=clock)
    live.start_term()
    clock.now += 3.5  # grace over
    live.record("n1", lsn=10, epoch=2, role="primary", map_version=7)
    assert live.state("n1") == ALIVE
    clock.now += 2.5
    assert live.state("n1") == SUSPECT
    clock.now += 3
    assert live.state("n1") == DEAD
    live.record("n1", lsn=11, epoch=2, role="primary", map_version=7)
    assert live.state("n1") == ALIVE
    snap = live.snapshot(["n1"])["n1"]
    assert snap["reported_lsn"] == 11 and snap["reported_role"] == "primary"


def test_a_new_leader_grants_every_node_a_grace_period() -> None:
    clock = FakeClock()
    live = Liveness(suspect_s=2, dead_s=3, grace_s=5, clock=clock)
    live.record("n1", lsn=1, epoch=1, role="replica", map_version=1)
    live.start_term()  # leadership changed: what the old term knew is forgotten
    assert live.report("n1") is None
    assert live.state("n1") == UNKNOWN and live.state("n2") == UNKNOWN
    clock.now += 4
    live.record("n2", lsn=3, epoch=1, role="primary", map_version=1)
    assert live.counts(["n1", "n2"]) == {ALIVE: 1, SUSPECT: 0, DEAD: 0, UNKNOWN: 1}
    clock.now += 1.5  # grace over; n1 never spoke
    assert live.state("n1") == DEAD and live.state("n2") == ALIVE


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError):
        Liveness(suspect_s=5, dead_s=1)
