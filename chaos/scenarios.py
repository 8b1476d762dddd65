"""Pinned, named chaos scenarios: which faults, on what cluster, under which workload.

A scenario is data: the fault specs its seeded schedule draws from, the cluster shape, the
workload mix and the timing of fault windows. ``shardkv chaos list`` prints this table;
``shardkv chaos run --scenario NAME --seed N`` replays a scenario exactly (same seed, same
schedule). Regression scenarios (one per bug the harness found) are added here and listed
in chaos/README.md with their reproduction command.

Fault names (what :mod:`shardkv.chaos.fault_catalog` builds):

- ``kill-node``, ``kill-primary``, ``kill-primaries``, ``kill-minority``,
  ``kill-coordinator-leader``: SIGKILL, then a restart with the same data at the window's end;
- ``pause-node``, ``pause-primary``: SIGSTOP / SIGCONT;
- ``partition-node`` (isolated from everyone), ``partition-primary`` (a shard's primary from
  its replicas), ``partition-replica`` (one replica from its primary only),
  ``partition-coordinator-leader``, ``partition-ring`` (majorities ring);
- ``packet-loss``: random drops of what the target sends (delay and resets on the client
  link in the standalone topology);
- ``wal-damage``: crash, damage the WAL, restart: repaired or refused, never corrupt data;
- ``failpoint-primary``, ``failpoint-replica``: arm a node failpoint (``params``: ``failpoint``
  and ``action``, e.g. ``1*crash`` or ``sleep(1500)``); crashed nodes restart at the end;
- ``switchover``: a planned switchover (``POST /admin/shards/{id}/failover``) while every
  replica's acknowledgements are held (``params``: ``acks`` = ``pause``, ``sleep(MS)`` or
  ``error``, ``hold_s``); ``isolate-primary``: a primary cut off from every process;
- ``clock-bump``, ``clock-strobe`` (any node), ``clock-drift`` (a primary): skew a node's clock
  through its test clock (``offset_ms``, ``rate``, ``period_ms``; drawn from the seed when not
  given); ``clock-drift-isolated-primary``: a primary's clock runs at ``{"clock": {"rate":
  R}}`` while it is cut off from every other member, the case the lease's rate bound is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from shardkv.chaos import coordinators_down, reshard_scenarios
from shardkv.chaos.cluster_under_test import ClusterShape
from shardkv.chaos.nemesis.schedule import FaultSpec
from shardkv.chaos.workloads.mix import WorkloadMix

STANDALONE_FAULTS = frozenset({"kill-node", "kill-primary", "kill-primaries", "pause-node",
                               "pause-primary", "partition-node", "packet-loss", "wal-damage"})


@dataclass(frozen=True)
class NegativeControl:
    """A deliberate node bug (``node/testing/negative_controls.py``) the run arms on every
    node, and the checkers it must make fail: exactly these, no other. A lost acknowledged
    write or a doubled increment is also, by definition, a non-linearizable history, so
    those controls name linearizability too."""

    switch: str
    must_fail: tuple[str, ...]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    faults: tuple[FaultSpec, ...]
    shape: ClusterShape = field(default_factory=ClusterShape)
    mix: WorkloadMix = field(default_factory=WorkloadMix)
    duration_s: float = 120.0
    fault_s: tuple[float, float] = (3.0, 8.0)
    quiet_s: tuple[float, float] = (3.0, 6.0)
    settle_s: float = 5.0
    regression: str | None = None  # the bug this scenario pins, for the README table
    negative_control: NegativeControl | None = None

    def with_topology(self, topology: str) -> Scenario:
        """The same scenario on another topology (``standalone``: one node, direct mode).
        Raises ValueError when a fault needs more than one node."""
        if topology == self.shape.topology:
            return self
        if topology == "standalone":
            unsupported = sorted({f.name for f in self.faults} - STANDALONE_FAULTS)
            if unsupported:
                raise ValueError(f"scenario {self.name} needs a replicated cluster for "
                                 f"{', '.join(unsupported)}")
            shape = replace(self.shape, topology="standalone", shards=1, replicas=1,
                            coordinators=0)
            mix = replace(self.mix, workers={k: v for k, v in self.mix.workers.items()
                                             if k != "eventual"})
            faults = tuple(
                replace(f, params={**f.params, "mode": "garbage"}) if f.name == "wal-damage"
                else f for f in self.faults)
            return replace(self, shape=shape, mix=mix, faults=faults)
        if topology == "cluster":
            return replace(self, shape=replace(self.shape, topology="cluster"))
        raise ValueError(f"unknown topology {topology!r} (cluster or standalone)")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "faults": [{"name": f.name, "targets": f.targets, "shape": f.shape,
                        "params": dict(f.params)} for f in self.faults],
            "shape": self.shape.to_json(),
            "workers": dict(self.mix.workers),
            "duration_s": self.duration_s,
            "fault_s": list(self.fault_s),
            "quiet_s": list(self.quiet_s),
            "regression": self.regression,
            "negative_control": None if self.negative_control is None else {
                "switch": self.negative_control.switch,
                "must_fail": list(self.negative_control.must_fail)},
            "retries": self.mix.retries,
        }


ONE_SHARD = ClusterShape("cluster", shards=1, replicas=3, coordinators=1)
TWO_SHARDS = ClusterShape("cluster", shards=2, replicas=3, coordinators=1)
THREE_COORDINATORS = ClusterShape("cluster", shards=1, replicas=3, coordinators=3)

_FAILPOINT_FAULTS = (
    FaultSpec("failpoint-primary",
              params={"failpoint": "primary_before_ack_client", "action": "1*crash"}),
    FaultSpec("failpoint-primary",
              params={"failpoint": "primary_before_commit", "action": "1*crash"}),
    FaultSpec("failpoint-primary", params={"failpoint": "wal_before_sync", "action": "1*crash"}),
    FaultSpec("failpoint-replica",
              params={"failpoint": "replica_before_ack", "action": "sleep(1500)"}),
)

_ALL_FAULTS = (
    FaultSpec("kill-node"),
    FaultSpec("kill-primary"),
    FaultSpec("pause-primary"),
    FaultSpec("partition-node"),
    FaultSpec("partition-primary"),
    FaultSpec("partition-replica"),
    FaultSpec("partition-ring", targets="none", shape="majorities-ring"),
    FaultSpec("packet-loss", params={"probability": 0.2}),
    FaultSpec("wal-damage", params={"mode": "bitflip"}),
    *_FAILPOINT_FAULTS[:2],
)

STANDALONE = ClusterShape("standalone", shards=1, replicas=1, coordinators=0)

# Every way a primary changes, for the incr and CAS workloads (issue 18): a planned switchover
# while the replicas' acknowledgements are withheld, delayed or dropped, and the unplanned
# failovers (SIGKILL, SIGSTOP past the failover timeout, isolation from every process).
_SWITCHOVERS = (
    FaultSpec("switchover", params={"acks": "pause", "hold_s": 0.5}),
    FaultSpec("switchover", params={"acks": "sleep(1500)", "hold_s": 0.5}),
    FaultSpec("switchover", params={"acks": "error", "hold_s": 0.5}),
)
_FAILOVERS = (
    *_SWITCHOVERS,
    FaultSpec("kill-primary"),
    FaultSpec("pause-primary"),
    FaultSpec("isolate-primary"),
)
_INCR_CAS = WorkloadMix({"register": 3, "counter": 3})


def _failovers(name: str, faults: tuple[FaultSpec, ...], what: str, retries: str) -> Scenario:
    client = ("the default client (retries on)" if retries == "default"
              else "a client that never retries")
    return Scenario(name, f"{what} under incr and CAS workloads, {client}", faults,
                    shape=ONE_SHARD, mix=replace(_INCR_CAS, retries=retries),
                    fault_s=(4.0, 7.0), quiet_s=(3.0, 5.0))


FAILOVER_SCENARIOS: tuple[Scenario, ...] = (
    _failovers("switchover", _SWITCHOVERS, "planned switchovers while replica acks are "
               "withheld, delayed or dropped", "off"),
    _failovers("switchover-retries", _SWITCHOVERS, "planned switchovers while replica acks "
               "are withheld, delayed or dropped", "default"),
    _failovers("failovers-incr-cas", _FAILOVERS, "every kind of primary change (switchover "
               "with held acks, kill, pause, isolation)", "off"),
    _failovers("failovers-incr-cas-retries", _FAILOVERS, "every kind of primary change "
               "(switchover with held acks, kill, pause, isolation)", "default"),
)


def _control(name: str, switch: str, must_fail: tuple[str, ...], description: str,
             faults: tuple[FaultSpec, ...], shape: ClusterShape, mix: WorkloadMix) -> Scenario:
    """A negative-control scenario: short, one deliberate bug, the checkers it must fail."""
    return Scenario(name, f"negative control ({switch}): {description}", faults, shape=shape,
                    mix=mix, duration_s=15.0, fault_s=(3.0, 4.0), quiet_s=(3.0, 4.0),
                    settle_s=3.0, negative_control=NegativeControl(switch, must_fail))


NEGATIVE_CONTROLS: tuple[Scenario, ...] = (
    _control("control-lost-writes", "ack-before-wal-write", ("lost-writes", "linearizability"),
             "one node acknowledges WAL groups before writing them and is SIGKILLed",
             (FaultSpec("kill-node"),), STANDALONE, WorkloadMix({"register": 3})),
    _control("control-linearizability", "replica-strong-reads", ("linearizability",),
             "replicas answer strong reads from their own state (one applies 400 ms late); "
             "the workload sends strong reads to any member",
             (FaultSpec("failpoint-replica", params={"failpoint": "replica_before_apply",
                                                     "action": "sleep(400)"}),),
             ONE_SHARD, WorkloadMix({"register": 3}, strong_reads_anywhere=True)),
    _control("control-staleness", "skip-staleness-check", ("staleness",),
             "replicas answer bounded eventual reads however far behind (one applies 1.5 s "
             "late)",
             (FaultSpec("failpoint-replica", params={"failpoint": "replica_before_apply",
                                                     "action": "sleep(1500)"}),),
             ONE_SHARD, WorkloadMix({"register": 2, "eventual": 4})),
    _control("control-convergence", "replica-drops-entries", ("convergence",),
             "replicas silently stop applying what they receive (entries become no-ops)",
             (), ONE_SHARD, WorkloadMix({"register": 3})),
    _control("control-counters", "double-apply-incr", ("counters", "linearizability"),
             "every tenth increment is applied twice",
             (), STANDALONE, WorkloadMix({"counter": 3})),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("smoke", "kill a node, then partition a node; short (the CI scenario)",
             (FaultSpec("kill-node"), FaultSpec("partition-node")),
             shape=ONE_SHARD, duration_s=40.0, fault_s=(3.0, 5.0), quiet_s=(2.0, 4.0)),
    Scenario("kill-primaries", "SIGKILL the primary of every shard at once, restart later",
             (FaultSpec("kill-primaries"),), shape=TWO_SHARDS),
    Scenario("kill-minority", "SIGKILL a minority of the nodes",
             (FaultSpec("kill-minority", targets="minority"),), shape=ONE_SHARD),
    Scenario("kill-coordinator-leader", "SIGKILL the Raft leader of the coordinators",
             (FaultSpec("kill-coordinator-leader"),), shape=THREE_COORDINATORS),
    Scenario("pause-primary", "SIGSTOP a shard's primary (a GC pause, a stalled VM)",
             (FaultSpec("pause-primary"),), shape=ONE_SHARD),
    Scenario("partition-primary", "cut a shard's primary off from its replicas",
             (FaultSpec("partition-primary"),), shape=ONE_SHARD),
    Scenario("partition-node", "isolate one node from every other process",
             (FaultSpec("partition-node"),), shape=ONE_SHARD),
    Scenario("partition-coordinator-leader", "isolate the coordinators' Raft leader",
             (FaultSpec("partition-coordinator-leader"),), shape=THREE_COORDINATORS),
    Scenario("majorities-ring", "each node sees a majority, no two the same (Jepsen's ring)",
             (FaultSpec("partition-ring", targets="none", shape="majorities-ring"),),
             shape=ONE_SHARD),
    Scenario("packet-loss", "drop 20% of the packets a node sends",
             (FaultSpec("packet-loss", params={"probability": 0.2}),), shape=ONE_SHARD),
    Scenario("wal-damage", "crash a node, flip bits in its WAL, restart: repair or refuse",
             (FaultSpec("wal-damage", params={"mode": "bitflip"}),), shape=ONE_SHARD,
             fault_s=(4.0, 8.0)),
    Scenario("failpoints", "crash or stall nodes inside the replication windows that "
             "matter (node failpoints): before the client's answer, before the majority wait, "
             "before the WAL sync; slow replica acknowledgements",
             _FAILPOINT_FAULTS, shape=ONE_SHARD, fault_s=(3.0, 6.0)),
    Scenario("random", "a seeded mix of every fault above, with a key watch checked "
             "against the acknowledged writes", _ALL_FAULTS, shape=ONE_SHARD,
             mix=WorkloadMix({"register": 3, "append": 2, "eventual": 2, "counter": 2,
                              "watch": 1})),
    Scenario("random-retries", "the same seeded mix of every fault, the workloads and the "
             "watch on the default client (retries on), as users run it",
             _ALL_FAULTS, shape=ONE_SHARD,
             mix=WorkloadMix({"register": 3, "append": 2, "eventual": 2, "counter": 2,
                              "watch": 1}, retries="default")),
    Scenario("clock-skew", "step, strobe and drift node clocks, and let a primary's clock "
             "run 4 % slow while it is cut off from the other members (inside the 5 % the "
             "lease assumes): leases, staleness bounds and failovers must stay correct",
             (FaultSpec("clock-bump"), FaultSpec("clock-strobe"), FaultSpec("clock-drift"),
              FaultSpec("clock-drift-isolated-primary", params={"clock": {"rate": 0.96}})),
             shape=ONE_SHARD, mix=WorkloadMix({"register": 3, "append": 1, "counter": 1,
                                               "eventual": 3}),
             fault_s=(4.0, 7.0)),
    Scenario("clock-beyond-bound", "negative control: a primary's clock runs at 40 % of real "
             "time while it is cut off, far outside the rate bound the lease assumes; its "
             "lease outlives the failover timeout. Anomalies here are the assumption failing "
             "as documented, not a bug; what the run shows is which other fences hold",
             (FaultSpec("clock-drift-isolated-primary", params={"clock": {"rate": 0.4}}),),
             shape=ONE_SHARD, mix=WorkloadMix({"register": 3, "eventual": 3}),
             duration_s=40.0, fault_s=(7.0, 9.0), quiet_s=(3.0, 4.0)),
    Scenario("restart-eventual-reads", "regression: kill the primary and restart it while "
             "replicas serve eventual reads; a restarted node must not answer them from its "
             "pre-crash state before it has rejoined",
             (FaultSpec("kill-primary"),), shape=ONE_SHARD,
             mix=WorkloadMix({"register": 3, "eventual": 4}),
             duration_s=40.0, fault_s=(3.0, 4.0), quiet_s=(3.0, 4.0),
             regression="a restarted ex-primary served eventual reads from its pre-crash "
                        "state (seconds stale) while still joining"),
    Scenario("paused-primary-eventual-reads", "regression: pause the primary long enough "
             "for a failover while replicas serve eventual reads; the paused ex-primary, once "
             "resumed, must not answer them from its pre-pause state",
             (FaultSpec("pause-primary"),), shape=ONE_SHARD,
             mix=WorkloadMix({"register": 3, "eventual": 4}),
             duration_s=40.0, fault_s=(6.0, 7.0), quiet_s=(3.0, 4.0),
             regression="a primary whose lease expired during a pause served eventual reads "
                        "from its pre-pause state after SIGCONT"),
    Scenario("partitioned-replica-eventual-reads", "regression: cut one replica off from "
             "its primary (the rest still make a majority) while it serves eventual reads; "
             "after the heal it must not claim freshness from frames that spent the partition "
             "in TCP buffers",
             (FaultSpec("partition-replica"),), shape=ONE_SHARD,
             mix=WorkloadMix({"register": 3, "eventual": 4}),
             duration_s=40.0, fault_s=(3.0, 5.0), quiet_s=(4.0, 5.0),
             regression="a replica cut off from its primary claimed freshness after the heal "
                        "from heartbeats delayed seconds by TCP retransmission backoff"),
    Scenario("standalone-crash", "one node, no replication: kill -9 under load, torn WAL "
             "tails, pauses and client-link partitions (what runs without coordinators)",
             (FaultSpec("kill-node"), FaultSpec("partition-node"), FaultSpec("pause-node"),
              FaultSpec("wal-damage", params={"mode": "garbage"})),
             shape=STANDALONE,
             mix=WorkloadMix({"register": 3, "append": 2, "counter": 2}),
             duration_s=60.0, fault_s=(2.0, 5.0), quiet_s=(2.0, 4.0),
             regression="harness: the client-link proxy kept a half-open connection after "
                        "its upstream crashed, so clients hung until the end of the run"),
    *FAILOVER_SCENARIOS,
    *NEGATIVE_CONTROLS,
)}

SCENARIOS.update(coordinators_down.scenarios())  # issue 19
SCENARIOS.update(reshard_scenarios.scenarios())  # issue 12


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; `shardkv chaos list` shows them: "
                         f"{', '.join(SCENARIOS)}") from None


def describe_scenarios() -> str:
    width = max(len(n) for n in SCENARIOS)
    lines = []
    for s in SCENARIOS.values():
        faults = ", ".join(dict.fromkeys(f.name for f in s.faults))
        shape = s.shape
        where = ("1 node" if shape.topology == "standalone" else
                 f"{shape.shards}x{shape.replicas}, {shape.coordinators} coord")
        lines.append(f"{s.name:<{width}}  {s.description}\n{'':<{width}}  faults: {faults}; "
                     f"cluster: {where}; default {s.duration_s:.0f} s")
    return "\n".join(lines)
