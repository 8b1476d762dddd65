"""The ``coordinators-down`` scenario: a majority of the coordinators gone for a whole window.

What it checks (issue 19): the data plane outlives the control plane. For 60 s a majority of
the coordinators (the leader among them) is SIGKILLed, or, as a separate fault, cut off
from everything by the loopback partition; in the middle of that window a shard's primary
is SIGKILLed too. The healthy shard must keep serving the register, CAS and counter
workloads; the shard that lost its primary waits (nobody can promote without a coordinator
quorum) and must not split-brain when the coordinators return and fail it over. The usual
checkers judge the history; ``availability_by_shard`` gives the answered fraction per shard
and phase.

Two fault names (registered in ``fault_catalog.py``) and a scenario for each (registered in
``scenarios.py``: ``coordinators-down`` kills, ``coordinators-partitioned`` partitions):

- ``coordinators-down-kill``: SIGKILL ``n // 2 + 1`` coordinators, leader first; restart them
  at the window's end;
- ``coordinators-down-partition``: the same coordinators isolated (needs root, iptables and
  cgroup2, like every loopback partition).

Both kill a primary ``primary_kill_after_s`` (10 s) into the window; it restarts after the
coordinators are back, so it returns as a replica of its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from shardkv.chaos.checkers.availability import answered, fault_windows
from shardkv.chaos.history import NemesisEvent, Operation
from shardkv.chaos.nemesis.fault import Nemesis, NemesisError
from shardkv.chaos.nemesis.schedule import FaultSpec

if TYPE_CHECKING:
    from shardkv.chaos.cluster_under_test import ClusterUnderTest
    from shardkv.chaos.nemesis.process import ProcessNemesis
    from shardkv.chaos.scenarios import Scenario

FAULTS = frozenset({"coordinators-down-kill", "coordinators-down-partition"})
WINDOW_S = 60.0
PRIMARY_KILL_AFTER_S = 10.0


class CoordinatorsDown:
    """One window: a coordinator majority down by ``outage`` (a kill or a partition nemesis),
    and one primary killed by ``kill`` part-way through."""

    def __init__(self, name: str, cut: ClusterUnderTest, outage: Nemesis | ProcessNemesis,
                 kill: ProcessNemesis, *, primary_kill_after_s: float = PRIMARY_KILL_AFTER_S,
                 ) -> None:
        self.name = name
        self.cut = cut
        self.outage = outage
        self.kill = kill
        self.primary_kill_after_s = primary_kill_after_s
        self._primary_kill: asyncio.Task[dict[str, Any]] | None = None
        self._killed_primary: list[str] = []

    async def _majority(self) -> list[str]:
        ids = list(self.cut.coordinator_ids())
        if len(ids) < 3:
            raise NemesisError(f"{self.name} needs at least 3 coordinators, the cluster has "
                               f"{len(ids)}")
        leader = await self.cut.coordinator_leader()
        ordered = ([leader] if leader in ids else []) + [i for i in ids if i != leader]
        return ordered[: len(ids) // 2 + 1]

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        victims = await self._majority()
        primaries = await self.cut.primaries()  # asked while the map still answers
        detail = {"coordinators": victims, **await self.outage.start(victims)}
        if primaries:
            after = float(params.get("primary_kill_after_s", self.primary_kill_after_s))
            self._primary_kill = asyncio.ensure_future(self._kill_later(primaries[0], after))
            detail["primary_to_kill"] = primaries[0]
        return {**detail, "resolved_targets": victims}

    async def _kill_later(self, primary: str, after_s: float) -> dict[str, Any]:
        await asyncio.sleep(after_s)
        self._killed_primary.append(primary)
        return await self.kill.start([primary])

    async def stop(self) -> dict[str, Any]:
        task, self._primary_kill = self._primary_kill, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Coordinators first: the killed primary then comes back as a replica of whoever
        # the returning coordinators promoted.
        detail = {"coordinators": await self.outage.stop()}
        if self._killed_primary:
            detail["primary"] = await self.kill.stop()
            self._killed_primary.clear()
        return detail

    async def heal_all(self) -> None:
        if self._primary_kill is not None:
            self._primary_kill.cancel()
        await self.outage.heal_all()
        await self.kill.heal_all()


def build(name: str, cut: ClusterUnderTest, kill: ProcessNemesis,
          partition: Callable[[str], Nemesis] | None) -> Nemesis:
    """The nemesis for ``name``; ``partition(name)`` builds a loopback partition (None when
    this machine has none)."""
    if cut.standalone:
        raise NemesisError(f"{name} needs coordinators")
    if name == "coordinators-down-kill":
        return CoordinatorsDown(name, cut, kill, kill)
    if partition is None:
        raise NemesisError(f"{name} needs root, iptables and cgroup2 (the loopback "
                           "partition); not available here")
    return CoordinatorsDown(name, cut, partition(name), kill)


def scenarios() -> dict[str, Scenario]:
    """The two scenarios (built on call: ``scenarios.py`` imports this module): the kill
    runs anywhere, the partition needs the loopback partition (root, iptables, cgroup2)."""
    from shardkv.chaos.cluster_under_test import ClusterShape
    from shardkv.chaos.scenarios import Scenario
    from shardkv.chaos.workloads.mix import WorkloadMix

    common: dict[str, Any] = {
        "shape": ClusterShape("cluster", shards=2, replicas=3, coordinators=3),
        "mix": WorkloadMix({"register": 3, "counter": 2, "append": 1}),
        "duration_s": 170.0, "fault_s": (WINDOW_S, WINDOW_S), "quiet_s": (10.0, 12.0),
        "settle_s": 15.0}
    what = ("for 60 s, with a primary kill while they are down: the other shard keeps "
            "serving, the orphaned one waits and fails over cleanly when they return")
    return {s.name: s for s in (
        Scenario("coordinators-down", "SIGKILL a majority of the coordinators (the leader "
                 "first) " + what, (FaultSpec("coordinators-down-kill", targets="none"),),
                 **common),
        Scenario("coordinators-partitioned", "isolate a majority of the coordinators (the "
                 "leader first) " + what,
                 (FaultSpec("coordinators-down-partition", targets="none"),), **common),
    )}


def availability_by_shard(ops: Iterable[Operation], events: Iterable[NemesisEvent],
                          shard_of: Callable[[str], str], run_end: float,
                          ) -> dict[str, dict[str, dict[str, Any]]]:
    """Answered fraction per shard, inside every fault window and outside (``steady``)."""
    windows = fault_windows(events, run_end)
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for op in ops:
        if op.key is None or op.final:
            continue
        phase = next((w.fault for w in windows if w.contains(op.call)), "steady")
        cell = counts[shard_of(op.key)][phase]
        cell[0] += answered(op)
        cell[1] += 1
    return {shard: {phase: {"answered": a, "total": t,
                            "fraction": round(a / t, 4) if t else None}
                    for phase, (a, t) in sorted(phases.items())}
            for shard, phases in sorted(counts.items())}


def main(argv: list[str] | None = None) -> int:
    """``python -m shardkv.chaos.coordinators_down RUN_DIR``: the per-shard table of a run
    (its ring rebuilt from the scenario's shard count: the default ring every cluster starts
    with)."""
    import json
    import sys
    from pathlib import Path

    from shardkv.chaos.history import load_history
    from shardkv.cluster.cluster_map import RingSpec
    from shardkv.cluster.ring import shard_for_key

    run_dir = Path((argv if argv is not None else sys.argv[1:])[0])
    shards = int(json.loads((run_dir / "scenario.json").read_text())["shape"]["shards"])
    ring = RingSpec.from_dict({"version": 1, "shards": {f"s{i}": 1
                                                        for i in range(1, shards + 1)}})
    history = load_history(run_dir / "history.jsonl")
    ops = history.operations()
    end = max((op.call for op in ops), default=0.0) + 1.0
    table = availability_by_shard(ops, history.nemesis,
                                  lambda key: shard_for_key(ring, key.encode()), end)
    print(json.dumps(table, indent=2))
    for shard, phases in table.items():
        for phase, cell in phases.items():
            print(f"{shard:<4} {phase:<32} {cell['answered']:>7}/{cell['total']:<7} "
                  f"{cell['fraction']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
