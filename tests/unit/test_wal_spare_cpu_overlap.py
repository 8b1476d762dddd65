"""A WAL group goes to the log's thread when the machine has a core to spare, so that the
loop works on the next group while the disk syncs this one (node/wal/group_placement.py,
node/wal/spare_cpu.py). The machine's idle time is made up here: no test depends on how
busy this machine is."""

from __future__ import annotations

from pathlib import Path

import pytest
from shardkv.node.wal.group_placement import OVERLAP_SPARE_CORES, GroupPlacement
from shardkv.node.wal.spare_cpu import SAMPLE_S, SpareCpu, read_cpu_times


class FakeMachine:
    """/proc/stat's idle and total jiffies, advanced by hand, and a clock."""

    def __init__(self, cpus: int = 2) -> None:
        self.cpus = cpus
        self.idle = 0.0
        self.total = 0.0
        self.now = 0.0
        self.readable = True

    def read(self) -> tuple[float, float] | None:
        return (self.idle, self.total) if self.readable else None

    def run(self, seconds: float, idle_cores: float) -> None:
        """``seconds`` pass with ``idle_cores`` of the machine idle (100 jiffies a second)."""
        self.now += seconds
        self.total += 100 * seconds * self.cpus
        self.idle += 100 * seconds * idle_cores

    def spare_cpu(self) -> SpareCpu:
        return SpareCpu(read=self.read, clock=lambda: self.now, cpu_count=self.cpus)


def placement(machine: FakeMachine, monkeypatch: pytest.MonkeyPatch,
              mode: str = "auto") -> GroupPlacement:
    monkeypatch.setenv("SHARDKV_WAL_IN_LOOP", mode)
    return GroupPlacement(machine.spare_cpu())


GROUP = [b"x" * 100] * 8  # eight appends, a few hundred bytes: small enough for the loop


def test_a_group_goes_to_the_thread_while_a_core_is_idle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine()
    rule = placement(machine, monkeypatch)
    assert rule.in_loop(GROUP)  # no complete window yet: the plain rule
    machine.run(SAMPLE_S, idle_cores=1.2)
    assert not rule.in_loop(GROUP) and rule.overlapped == 1
    machine.run(SAMPLE_S, idle_cores=0.1)  # every core busy: blocking the loop costs nothing
    assert rule.in_loop(GROUP) and rule.overlapped == 1


def test_one_append_stays_on_the_loop_even_with_cores_idle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine()
    rule = placement(machine, monkeypatch)
    machine.run(SAMPLE_S, idle_cores=2.0)
    assert rule.in_loop([b"one append"])  # one writer waiting: nothing to overlap


def test_the_switch_turns_the_overlap_off_or_sends_everything_to_the_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine()
    plain = placement(machine, monkeypatch, "1")
    always_thread = placement(machine, monkeypatch, "0")
    machine.run(SAMPLE_S, idle_cores=2.0)
    assert plain.in_loop(GROUP) and not always_thread.in_loop(GROUP)
    with pytest.raises(ValueError, match="SHARDKV_WAL_IN_LOOP"):
        placement(machine, monkeypatch, "sometimes")


def test_slow_syncs_and_large_groups_still_go_to_the_thread_without_idle_cores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine()
    rule = placement(machine, monkeypatch)
    machine.run(SAMPLE_S, idle_cores=0.0)
    assert not rule.in_loop([b"x" * (1 << 20)])
    rule.note_sync(1.0)
    assert not rule.in_loop(GROUP)


def test_the_sample_is_the_last_complete_window_and_unreadable_means_unknown() -> None:
    machine = FakeMachine(cpus=4)
    spare = machine.spare_cpu()
    machine.run(SAMPLE_S / 2, idle_cores=3.0)
    assert spare.cores() is None  # half a window: not measured yet
    machine.run(SAMPLE_S / 2, idle_cores=3.0)
    assert spare.cores() == pytest.approx(3.0)  # 3 of 4 cores idle over the window
    machine.run(SAMPLE_S / 4, idle_cores=0.0)
    assert spare.cores() == pytest.approx(3.0)  # kept until the next window is complete
    machine.readable = False
    machine.run(SAMPLE_S, idle_cores=0.0)
    assert spare.cores() is None
    assert OVERLAP_SPARE_CORES > 0


def test_proc_stat_is_parsed_with_iowait_as_idle(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 40 1 2 3 0 0\ncpu0 50 2 25 400 20 0 1 1 0 0\n")
    assert read_cpu_times(str(stat)) == (840.0, 1001.0)
    stat.write_text("intr 1 2 3\n")
    assert read_cpu_times(str(stat)) is None
    assert read_cpu_times(str(tmp_path / "absent")) is None
