"""The resharding scenarios (issue 12 "Chaos", issue 22's scenario mixing every nemesis with
resharding), registered in ``scenarios.py``.

- ``reshard``: every 20-35 s a shard is added, reweighted or removed
  (``chaos/nemesis/reshard.py``) under the register (writes and CAS over 24 keys, so every
  shard owns some), counter and watch workloads, with the default client (retries on: a
  request answered ``STALE_MAP`` or fenced ``UNAVAILABLE`` during a flip is retried, and
  must still apply exactly once; the watch follows every flip, checked as ``watch-events``).
- ``reshard-faults``: the same, with kills, pauses and partitions of the sources, the
  targets and the coordinator leader injected part-way through an add or a remove, and the
  plain primary and coordinator-leader faults between migrations.

Adds stop at ``nemesis.reshard.MAX_SHARDS`` shards, removes at ``MIN_SHARDS`` in the ring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shardkv.chaos.nemesis.schedule import FaultSpec

if TYPE_CHECKING:
    from shardkv.chaos.scenarios import Scenario

_DURING = tuple(FaultSpec(f"reshard-add-{kind}-{role}", targets="none")
                for kind, role in (("kill", "source"), ("kill", "target"),
                                   ("kill", "coordinator-leader"), ("pause", "source"),
                                   ("pause", "target"), ("partition", "source"),
                                   ("partition", "target"),
                                   ("partition", "coordinator-leader"))) + tuple(
    FaultSpec(f"reshard-remove-{kind}-{role}", targets="none")
    for kind, role in (("kill", "source"), ("kill", "target"), ("kill", "coordinator-leader"),
                       ("pause", "target"), ("partition", "source")))
_CHANGES = (FaultSpec("reshard-add", targets="none"), FaultSpec("reshard-weight", targets="none"),
            FaultSpec("reshard-remove", targets="none"))
_BETWEEN = (FaultSpec("kill-primary"), FaultSpec("pause-primary"),
            FaultSpec("partition-primary"), FaultSpec("kill-coordinator-leader"),
            FaultSpec("partition-coordinator-leader"))


def scenarios() -> dict[str, Scenario]:
    """Built on call (``scenarios.py`` imports this module)."""
    from shardkv.chaos.cluster_under_test import ClusterShape
    from shardkv.chaos.scenarios import Scenario
    from shardkv.chaos.workloads.mix import WorkloadMix

    common: dict[str, Any] = {
        "mix": WorkloadMix({"register": 4, "counter": 2, "watch": 1}, register_keys=24,
                           retries="default"),
        "duration_s": 120.0, "settle_s": 10.0}
    return {s.name: s for s in (
        Scenario("reshard", "add, reweight or remove a shard every 20-35 s (online migration: "
                 "copy, fence, flip, clean) under register, CAS, counter and watch workloads, "
                 "retries on",
                 _CHANGES,
                 shape=ClusterShape("cluster", shards=2, replicas=3, coordinators=1),
                 fault_s=(12.0, 20.0), quiet_s=(8.0, 15.0), **common),
        Scenario("reshard-faults", "add, reweight and remove shards while sources, targets "
                 "and the coordinator leader are killed, paused or partitioned mid-migration; "
                 "primary and coordinator-leader faults between migrations; retries on",
                 (*_CHANGES, *_DURING, *_BETWEEN),
                 shape=ClusterShape("cluster", shards=2, replicas=3, coordinators=3),
                 fault_s=(8.0, 14.0), quiet_s=(4.0, 8.0), **common),
    )}
