"""The copy's stage clock: stages add up, a mark closes the span where it is, and a status
before the first batch says so (no timing is asserted)."""

from __future__ import annotations

import pytest
from shardkv.node.migration import stage_clock
from shardkv.node.migration.stage_clock import StageClock


class _FakeTime:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 10.0

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    thread_time = process_time


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> _FakeTime:
    clock = _FakeTime()
    monkeypatch.setattr(stage_clock.time, "perf_counter", clock.perf_counter)
    monkeypatch.setattr(stage_clock.time, "process_time", clock.process_time)
    monkeypatch.setattr(stage_clock.time, "thread_time", clock.thread_time)
    return clock


def test_stages_add_up_and_count(fake: _FakeTime) -> None:
    clock = StageClock()
    clock.add("ack_wait", 0.25)
    clock.add("ack_wait", 0.5, count=2)
    with clock.timed("encode"):  # no await: its CPU counts too
        fake.wall += 0.125
        fake.cpu += 0.0625
    with clock.waited("round_trip"):  # other tasks run meanwhile: wall only
        fake.wall += 0.5
        fake.cpu += 0.25
    status = clock.status()
    assert status["stages_s"] == {"ack_wait": 0.75, "encode": 0.125, "round_trip": 0.5}
    assert status["stages_cpu_s"] == {"encode": 0.062}
    assert status["counts"] == {"ack_wait": 3, "encode": 1, "round_trip": 1}
    assert status["wall_s"] is None and status["cpu_s"] is None  # never started


def test_the_span_runs_from_the_first_start_to_the_last_mark(fake: _FakeTime) -> None:
    clock = StageClock()
    clock.start()
    fake.wall, fake.cpu = 101.0, 10.5
    clock.start()  # a second start keeps the first
    assert clock.status()["wall_s"] == 1.0  # open: up to now
    clock.mark()
    fake.wall, fake.cpu = 103.0, 11.0
    assert (clock.status()["wall_s"], clock.status()["cpu_s"]) == (1.0, 0.5)
    clock.mark()  # a later mark moves the end
    assert (clock.status()["wall_s"], clock.status()["cpu_s"]) == (3.0, 1.0)


def test_a_stage_that_raises_is_still_timed(fake: _FakeTime) -> None:
    clock = StageClock()
    with pytest.raises(RuntimeError), clock.timed("write"):
        fake.wall += 0.5
        raise RuntimeError("the target refused")
    assert clock.status()["stages_s"] == {"write": 0.5}
