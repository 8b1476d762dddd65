"""A seeded fault schedule: what to inject, where, when and for how long; replays exactly.

Everything random is decided up front from the seed, including the targets and partition
shapes, and the schedule is saved with the run (``schedule.json``), so a failing run is
reproduced either from its seed (same nodes, same specs) or from the saved file. Faults are
sequential: one window at a time, with quiet time between, which keeps each failover
measurable and each anomaly attributable (etcd's robustness tests do the same).

:func:`run_schedule` plays a schedule against named nemeses, records every start and stop
in the history, runs an optional health check before each fault and after each heal, and
always ends with ``heal_all`` on every nemesis, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shardkv.chaos.history import History
from shardkv.chaos.nemesis.fault import Nemesis, NemesisError
from shardkv.chaos.nemesis.partitions import bridge, halves, isolate, majorities_ring

log = logging.getLogger(__name__)

TargetMode = Literal["one", "minority", "majority", "all", "none"]
SHAPES = {"halves": halves, "majorities-ring": majorities_ring, "bridge": bridge}


@dataclass(frozen=True)
class FaultSpec:
    """One kind of fault the schedule may pick: the nemesis ``name``, how to choose its
    targets among the nodes, fixed ``params``, and for partitions an optional ``shape``
    (``isolate`` the targets, or ``halves``/``majorities-ring``/``bridge`` of all nodes)."""

    name: str
    targets: TargetMode = "one"
    params: Mapping[str, Any] = field(default_factory=dict)
    shape: str | None = None


@dataclass(frozen=True)
class ScheduledFault:
    at_s: float
    fault: str
    targets: tuple[str, ...]
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "fault": self.fault, "targets": list(self.targets),
                "duration_s": self.duration_s, "params": self.params}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ScheduledFault:
        return cls(float(raw["at_s"]), str(raw["fault"]), tuple(raw["targets"]),
                   float(raw["duration_s"]), dict(raw.get("params") or {}))


@dataclass(frozen=True)
class Schedule:
    seed: int
    duration_s: float
    faults: tuple[ScheduledFault, ...]

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "duration_s": self.duration_s,
                "faults": [f.to_json() for f in self.faults]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Schedule:
        return cls(int(raw["seed"]), float(raw["duration_s"]),
                   tuple(ScheduledFault.from_json(f) for f in raw["faults"]))

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        return cls.from_json(json.loads(Path(path).read_text()))


def _choose_targets(rng: random.Random, nodes: Sequence[str], mode: TargetMode) -> list[str]:
    n = len(nodes)
    count = {"one": 1, "minority": max(1, (n - 1) // 2), "majority": n // 2 + 1,
             "all": n, "none": 0}[mode]
    return sorted(rng.sample(list(nodes), min(count, n)))


def generate_schedule(
    seed: int,
    duration_s: float,
    specs: Sequence[FaultSpec],
    nodes: Sequence[str],
    *,
    quiet_s: tuple[float, float] = (2.0, 5.0),
    fault_s: tuple[float, float] = (2.0, 8.0),
    settle_s: float = 5.0,
) -> Schedule:
    """Faults one after another from ``quiet_s`` after the start until ``settle_s`` before
    the end. Times are rounded to milliseconds so the JSON form is exact."""
    if not specs:
        return Schedule(seed, duration_s, ())
    rng = random.Random(seed)
    faults: list[ScheduledFault] = []
    t = rng.uniform(*quiet_s)
    while True:
        spec = specs[rng.randrange(len(specs))]
        length = round(rng.uniform(*fault_s), 3)
        if t + length > duration_s - settle_s:
            break
        targets = _choose_targets(rng, nodes, spec.targets)
        params = dict(spec.params)
        if spec.shape is not None:
            grudge = (
                isolate(nodes, targets) if spec.shape == "isolate"
                else SHAPES[spec.shape](nodes, rng)
            )
            params["grudge"] = {node: sorted(peers) for node, peers in sorted(grudge.items())}
        faults.append(ScheduledFault(round(t, 3), spec.name, tuple(targets), length, params))
        t += length + rng.uniform(*quiet_s)
    return Schedule(seed, duration_s, tuple(faults))


def _safe(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A nemesis's detail as keyword arguments of ``record_nemesis``: keys that would collide
    with its own parameters (``fault``, ``action``, ``targets``) get a ``detail_`` prefix."""
    return {(f"detail_{k}" if k in ("fault", "action", "targets") else k): v
            for k, v in detail.items()}


async def run_schedule(
    schedule: Schedule,
    nemeses: Mapping[str, Nemesis],
    history: History,
    *,
    health_check: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Play ``schedule`` from now (its time 0 is this call). Raises what a nemesis or the
    health check raised, after healing everything."""
    missing = sorted({f.fault for f in schedule.faults} - set(nemeses))
    if missing:
        raise KeyError(f"no nemesis for {missing}")
    loop = asyncio.get_running_loop()
    origin = loop.time()

    async def sleep_until(offset_s: float) -> None:
        delay = origin + offset_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    failed = True
    try:
        for fault in schedule.faults:
            await sleep_until(fault.at_s)
            if health_check is not None:
                await health_check()
            nemesis = nemeses[fault.fault]
            detail = await nemesis.start(fault.targets, **fault.params)
            # A role-targeted fault says whom it really hit: record that as the targets.
            hit = tuple(detail.get("resolved_targets") or fault.targets)
            history.record_nemesis(fault.fault, "start", hit, **_safe(detail),
                                   scheduled_targets=list(fault.targets))
            await sleep_until(fault.at_s + fault.duration_s)
            detail = await nemesis.stop()
            history.record_nemesis(fault.fault, "stop", hit, **_safe(detail))
            if health_check is not None:
                await health_check()
        failed = False
    finally:
        heal_errors = []
        for name, nemesis in nemeses.items():
            try:
                await nemesis.heal_all()
            except Exception as exc:
                log.exception("heal_all of nemesis %s failed", name)
                heal_errors.append(f"{name}: {exc}")
        history.record_nemesis("all", "heal", errors=heal_errors)
    if heal_errors and not failed:
        raise NemesisError("could not heal every fault: " + "; ".join(heal_errors))
