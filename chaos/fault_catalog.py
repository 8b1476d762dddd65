"""Building the nemeses a scenario names, bound to one cluster under test.

Each fault name of :mod:`shardkv.chaos.scenarios` becomes a nemesis: the primitives of
:mod:`shardkv.chaos.nemesis` (process signals, the loopback partition, the client-link proxy,
WAL damage), wrapped by :class:`RoleTargeted` where the target is a role that only the live
map can name. In the standalone topology the network faults act on the client's link (the
only link there is); in the cluster topology they need root, iptables and cgroup2
(:mod:`.nemesis.loopback_partition`), and a scenario that needs them elsewhere is refused with
the reason. On containers (``--docker``) the process faults signal each container's first
process by its host pid, exactly as local processes are signalled; ``partition-node`` is a
``docker network disconnect`` and the other network faults are iptables rules in the
containers' namespaces (:mod:`.nemesis.container_network`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

from shardkv.chaos import coordinators_down
from shardkv.chaos.cluster_under_test import ClusterUnderTest, http_json
from shardkv.chaos.nemesis.by_role import RoleTargeted
from shardkv.chaos.nemesis.clock_skew import ClockNemesis
from shardkv.chaos.nemesis.combined import Combined
from shardkv.chaos.nemesis.container_network import ContainerNetwork, DisconnectPartition
from shardkv.chaos.nemesis.damaged_restart import DamagedRestart
from shardkv.chaos.nemesis.delay_proxy import ProxyPartitioner
from shardkv.chaos.nemesis.failpoint import FailpointNemesis
from shardkv.chaos.nemesis.fault import Nemesis, NemesisError
from shardkv.chaos.nemesis.loopback_partition import (
    LoopbackNetwork,
    LoopbackPacketLoss,
    LoopbackPartition,
)
from shardkv.chaos.nemesis.process import ProcessNemesis
from shardkv.chaos.nemesis.switchover import Switchover

# Clock faults and the ClockNemesis mode each one plays; a drift is aimed at a primary (the
# lease is the primary's), bumps and strobes at any node (a replica's staleness, TTLs).
CLOCK_FAULTS = {"clock-bump": "bump", "clock-drift": "drift", "clock-strobe": "strobe"}
NETWORK_FAULTS = frozenset({"partition-node", "partition-primary", "partition-replica",
                            "isolate-primary",
                            "partition-coordinator-leader", "partition-ring", "packet-loss",
                            "clock-drift-isolated-primary"})


class FaultCatalog:
    """The nemeses of one run. ``network`` is the loopback network (cluster topology), the
    containers' network (``--docker``), or None (standalone, or no root)."""

    def __init__(self, cut: ClusterUnderTest, *, seed: int,
                 network: LoopbackNetwork | ContainerNetwork | None = None) -> None:
        self.cut = cut
        self.network = network
        self.seed = seed
        self.kill = ProcessNemesis("kill", cut.pid_of, self._restart)
        self.pause = ProcessNemesis("pause", cut.pid_of)

    async def _restart(self, process_id: str) -> None:
        pid = await self.cut.restart(process_id)
        if self.network is not None:
            await self.network.place(process_id, pid)

    async def _kill_now(self, process_id: str) -> None:
        await asyncio.to_thread(self.cut.launcher.kill, process_id)

    async def _ready(self, process_id: str) -> bool:
        status, _ = await asyncio.to_thread(http_json, f"{self.cut.url_of(process_id)}/ready")
        return status == 200

    # -- resolvers: schedule targets -> live targets ---------------------------------------

    async def _as_given(self, targets: Sequence[str], params: dict[str, Any]
                        ) -> tuple[list[str], dict[str, Any]]:
        return list(targets), params

    async def _primary_of_target(self, targets: Sequence[str], params: dict[str, Any]
                                 ) -> tuple[list[str], dict[str, Any]]:
        """The current primary of the shard the scheduled target node belongs to."""
        primaries = await self.cut.primaries()
        if self.cut.standalone:
            return primaries, params
        cmap = await self.cut.cluster_map() or {}
        out = []
        for target in targets:
            shard = (cmap.get("nodes") or {}).get(target, {}).get("shard")
            primary = ((cmap.get("shards") or {}).get(shard) or {}).get("primary")
            out.append(primary or (primaries[0] if primaries else target))
        return sorted(set(out)), params

    async def _all_primaries(self, targets: Sequence[str], params: dict[str, Any]
                             ) -> tuple[list[str], dict[str, Any]]:
        return await self.cut.primaries(), params

    async def _coordinator_leader(self, targets: Sequence[str], params: dict[str, Any]
                                  ) -> tuple[list[str], dict[str, Any]]:
        leader = await self.cut.coordinator_leader()
        return ([leader] if leader else []), params

    async def _primary_from_replicas(self, targets: Sequence[str], params: dict[str, Any]
                                     ) -> tuple[list[str], dict[str, Any]]:
        primaries, _ = await self._primary_of_target(targets, params)
        grudge: dict[str, frozenset[str]] = {}
        for primary in primaries:
            replicas = await self.cut.replicas_of_primary(primary)
            grudge[primary] = frozenset(replicas)
            for r in replicas:
                grudge[r] = frozenset({primary})
        return primaries, {**params, "grudge": grudge}

    async def _replica_from_primary(self, targets: Sequence[str], params: dict[str, Any]
                                    ) -> tuple[list[str], dict[str, Any]]:
        """A replica of the target's shard cut off from its primary only (the primary and
        the other replicas still make a majority, so writes go on without it)."""
        replicas, _ = await self._replica_of_target(targets, params)
        primaries = set(await self.cut.primaries())
        grudge: dict[str, frozenset[str]] = {}
        for replica in replicas:
            for primary in primaries:
                if replica in await self.cut.replicas_of_primary(primary):
                    grudge[replica] = frozenset({primary})
                    grudge[primary] = grudge.get(primary, frozenset()) | {replica}
        return sorted(set(replicas) & set(grudge)), {**params, "grudge": grudge}

    async def _replica_of_target(self, targets: Sequence[str], params: dict[str, Any]
                                 ) -> tuple[list[str], dict[str, Any]]:
        """A replica (never the primary) of the target's shard: damage that destroys
        acknowledged records is only survivable where other copies exist."""
        if self.cut.standalone:
            return list(targets), params
        primaries = set(await self.cut.primaries())
        out = []
        for target in targets:
            if target not in primaries:
                out.append(target)
                continue
            replicas = await self.cut.replicas_of_primary(target)
            if replicas:
                out.append(random.Random(f"{self.seed}/{target}").choice(sorted(replicas)))
        return out, params

    # -- the catalog -------------------------------------------------------------------------

    def build(self, names: Sequence[str]) -> dict[str, Nemesis]:
        """The nemeses for ``names``; NemesisError when one cannot run here."""
        out: dict[str, Nemesis] = {}
        for name in dict.fromkeys(names):
            out[name] = self._one(name)
        return out

    def _network_fault(self, name: str) -> Nemesis:
        if self.cut.standalone:
            proxy = self.cut.client_proxy
            if proxy is None:
                raise NemesisError("the client proxy is not started")
            link = ProxyPartitioner({("client", "n1"): proxy}, name=name)
            if name == "partition-node":
                return _WithParams(link, {"blackhole": True})
            if name == "packet-loss":
                return _WithParams(link, {"delay_ms": 20.0, "jitter_ms": 30.0,
                                          "drop_rate": 0.02}, drop=("probability",))
            raise NemesisError(f"{name} needs a replicated cluster")
        containers = self.cut.container_cluster
        if containers is not None and name == "partition-node":
            disconnect = DisconnectPartition(containers.network, containers.container_of,
                                             containers.plan.ip_of, name)
            return RoleTargeted(name, disconnect, self._as_given)
        if self.network is None:
            raise NemesisError(f"{name} needs root, iptables and cgroup2 "
                               "(the loopback partition); not available here")
        if name == "clock-drift-isolated-primary":
            # The primary's clock drifts while it is cut off from every other member (its
            # clients still reach it): the case the lease's rate bound is for.
            clock = ClockNemesis(url_of=self.cut.url_of, seed=self.seed, name="clock")
            isolation = LoopbackPartition(self.network, "partition")
            both = Combined(name, [clock, isolation], fixed={"clock": {"mode": "drift"}})
            return RoleTargeted(name, both, self._primary_of_target)
        if name == "packet-loss":
            return LoopbackPacketLoss(self.network, name)
        partition = LoopbackPartition(self.network, name)
        if name == "partition-node":
            return RoleTargeted(name, partition, self._as_given)
        if name == "isolate-primary":  # from everyone, coordinators too: a failover follows
            return RoleTargeted(name, partition, self._primary_of_target)
        if name == "partition-primary":
            return RoleTargeted(name, partition, self._primary_from_replicas)
        if name == "partition-replica":
            return RoleTargeted(name, partition, self._replica_from_primary)
        if name == "partition-coordinator-leader":
            return RoleTargeted(name, partition, self._coordinator_leader)
        return RoleTargeted(name, partition, self._ring_targets)

    def _partition_or_none(self) -> Callable[[str], Nemesis] | None:
        network = self.network
        if not isinstance(network, LoopbackNetwork):
            return None
        return lambda name: LoopbackPartition(network, name)

    async def _ring_targets(self, targets: Sequence[str], params: dict[str, Any]
                            ) -> tuple[list[str], dict[str, Any]]:
        grudge = params.get("grudge") or {}
        return sorted(grudge) or list(self.cut.node_ids()), params

    def _one(self, name: str) -> Nemesis:
        if name in coordinators_down.FAULTS:  # issue 19: chaos/coordinators_down.py
            return coordinators_down.build(name, self.cut, self.kill, self._partition_or_none())
        if name in NETWORK_FAULTS:
            return self._network_fault(name)
        if name == "kill-node" or name == "kill-minority":
            return RoleTargeted(name, self.kill, self._as_given)
        if name == "kill-primary":
            return RoleTargeted(name, self.kill, self._primary_of_target)
        if name == "kill-primaries":
            return RoleTargeted(name, self.kill, self._all_primaries)
        if name == "kill-coordinator-leader":
            if self.cut.standalone:
                raise NemesisError("kill-coordinator-leader needs coordinators")
            return RoleTargeted(name, self.kill, self._coordinator_leader)
        if name == "pause-node":
            return RoleTargeted(name, self.pause, self._as_given)
        if name == "pause-primary":
            return RoleTargeted(name, self.pause, self._primary_of_target)
        if name in ("failpoint-primary", "failpoint-replica"):
            if self.cut.standalone:
                raise NemesisError(f"{name} needs a replicated cluster")
            failpoint = FailpointNemesis(url_of=self.cut.url_of, exited=self.cut.exited,
                                         restart=self._restart, name=name)
            resolve = (self._primary_of_target if name == "failpoint-primary"
                       else self._replica_of_target)
            return RoleTargeted(name, failpoint, resolve)
        if name == "switchover":
            if self.cut.standalone:
                raise NemesisError("switchover needs coordinators and replicas")
            switch = Switchover(url_of=self.cut.url_of, cluster_map=self.cut.cluster_map)
            return RoleTargeted(name, switch, self._primary_of_target)
        if name in CLOCK_FAULTS:
            mode = CLOCK_FAULTS[name]
            clock = _WithParams(ClockNemesis(url_of=self.cut.url_of, seed=self.seed, name=name),
                                {"mode": mode})
            resolve = self._primary_of_target if mode == "drift" else self._as_given
            return RoleTargeted(name, clock, resolve)
        if name == "wal-damage":
            damage = DamagedRestart(
                kill=self._kill_now, restart=self._restart, data_dir_of=self.cut.data_dir_of,
                pid_of=self.cut.pid_of, exited=self.cut.exited, ready=self._ready,
                seed=self.seed)
            return RoleTargeted(name, damage, self._replica_of_target)
        raise NemesisError(f"no fault named {name!r}")


class _WithParams:
    """Fixed params for a nemesis whose schedule entry names none (or other ones)."""

    def __init__(self, inner: Nemesis, params: dict[str, Any],
                 drop: tuple[str, ...] = ()) -> None:
        self.inner = inner
        self.name = inner.name
        self.params = params
        self.drop = drop

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        merged = {k: v for k, v in params.items() if k not in self.drop} | self.params
        return await self.inner.start(targets, **merged)

    async def stop(self) -> dict[str, Any]:
        return await self.inner.stop()

    async def heal_all(self) -> None:
        await self.inner.heal_all()
