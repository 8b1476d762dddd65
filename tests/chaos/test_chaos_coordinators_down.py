"""The coordinators-down fault (chaos/coordinators_down.py) with fake processes: which
coordinators it takes down, the primary kill inside the window, the order things come
back in, and the per-shard availability figures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from shardkv.chaos.coordinators_down import CoordinatorsDown, availability_by_shard
from shardkv.chaos.history import NemesisEvent, Operation
from shardkv.chaos.nemesis.fault import NemesisError


class FakeCluster:
    standalone = False

    def __init__(self, coordinators: Sequence[str] = ("c1", "c2", "c3")) -> None:
        self._coordinators = list(coordinators)

    def coordinator_ids(self) -> list[str]:
        return self._coordinators

    async def coordinator_leader(self) -> str | None:
        return "c2"

    async def primaries(self) -> list[str]:
        return ["n1", "n4"]


class Recorder:
    name = "kill"

    def __init__(self, log: list[tuple[str, tuple[str, ...]]]) -> None:
        self.log = log
        self.active: list[str] = []

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        self.log.append(("start", tuple(targets)))
        self.active += targets
        return {}

    async def stop(self) -> dict[str, Any]:
        self.log.append(("stop", tuple(self.active)))
        self.active = []
        return {}

    async def heal_all(self) -> None:
        self.log.append(("heal", ()))


async def test_takes_a_majority_down_leader_first_and_kills_a_primary_inside() -> None:
    log: list[tuple[str, tuple[str, ...]]] = []
    outage, kill = Recorder(log), Recorder(log)
    fault = CoordinatorsDown("coordinators-down-partition", FakeCluster(), outage, kill,
                             primary_kill_after_s=0.0)
    detail = await fault.start([])
    assert detail["resolved_targets"] == ["c2", "c1"] and detail["primary_to_kill"] == "n1"
    for _ in range(50):
        if len(log) == 2:
            break
        await asyncio.sleep(0.01)
    await fault.stop()
    # coordinators back before the killed primary restarts
    assert log == [("start", ("c2", "c1")), ("start", ("n1",)), ("stop", ("c2", "c1")),
                   ("stop", ("n1",))]


async def test_stop_before_the_primary_kill_cancels_it() -> None:
    log: list[tuple[str, tuple[str, ...]]] = []
    outage, kill = Recorder(log), Recorder(log)
    fault = CoordinatorsDown("coordinators-down-partition", FakeCluster(), outage, kill,
                             primary_kill_after_s=30.0)
    await fault.start([])
    await fault.stop()
    assert log == [("start", ("c2", "c1")), ("stop", ("c2", "c1"))]


async def test_needs_three_coordinators() -> None:
    log: list[tuple[str, tuple[str, ...]]] = []
    fault = CoordinatorsDown("coordinators-down-kill", FakeCluster(["c1"]), Recorder(log),
                             Recorder(log))
    with pytest.raises(NemesisError, match="at least 3 coordinators"):
        await fault.start([])


def op(key: str, call: float, kind: str, error: str | None = None) -> Operation:
    return Operation(id=int(call * 10), process=0, f="write", key=key, value=1,
                     type=kind, call=call, ret=call + 0.1, error=error)  # type: ignore[arg-type]


def test_availability_by_shard_and_phase() -> None:
    events = [NemesisEvent(10.0, "coordinators-down-kill", "start"),
              NemesisEvent(20.0, "coordinators-down-kill", "stop")]
    ops = [op("a", 1.0, "ok"), op("a", 11.0, "ok"), op("b", 12.0, "info", "TIMEOUT"),
           op("b", 13.0, "ok"), op("b", 25.0, "ok")]
    got = availability_by_shard(ops, events, {"a": "s1", "b": "s2"}.__getitem__, 30.0)
    assert got["s1"]["steady"]["fraction"] == 1.0
    assert got["s1"]["coordinators-down-kill"] == {"answered": 1, "total": 1, "fraction": 1.0}
    assert got["s2"]["coordinators-down-kill"] == {"answered": 1, "total": 2, "fraction": 0.5}
