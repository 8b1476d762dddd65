"""Online resharding as a chaos action: add a shard while the workloads run (issue 12, "Chaos").

A window of ``reshard-add`` asks the coordinators for a new shard (``POST /admin/shards``,
202 ``{"migration", "shard"}``) signed with the credential the switchover nemesis uses,
starts the new shard's members through the launcher (``cluster/shard_members.py``, as
``shardkv shard add`` does on a local cluster), and at the window's end waits, bounded, for
the migration to finish: ``done``, ``failed`` or ``aborted`` is recorded in the stop event,
with the keys moved. A refusal (a migration already running, no coordinator quorum) is
recorded too, not raised: it is the system's answer, not a harness failure.

The ``reshard-add-*`` variants inject a second fault part-way through the copy, aimed at a
role resolved when it fires: ``-source`` a primary of an existing shard, ``-target`` the new
shard's primary, ``-coordinator-leader`` the Raft leader; ``kill``, ``pause`` or
``partition`` (the loopback partition; the new members join the run's network as they
start, so a partition also cuts the source from the target). The fault is healed before
the wait for the migration's end, so a migration that cannot resume is a finding.

Shard remove and reweight are not built yet (the coordinator refuses them); the scenarios
add shards only, up to ``max_shards`` (each add starts ``replicas`` new processes on a
small machine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shardkv.chaos.cluster_under_test import http_json
from shardkv.chaos.nemesis.fault import Nemesis, NemesisError, run_command
from shardkv.chaos.nemesis.loopback_partition import LoopbackNetwork
from shardkv.chaos.nemesis.switchover import http_post_json
from shardkv.cluster.cluster_token import auth_headers
from shardkv.cluster.shard_members import start_shard_members

if TYPE_CHECKING:
    from shardkv.chaos.cluster_under_test import ClusterUnderTest

FINISHED = ("done", "failed", "aborted")
ROLES = ("source", "target", "coordinator-leader")
KINDS = ("kill", "pause", "partition")
FAULTS = frozenset({"reshard-add"} | {f"reshard-add-{kind}-{role}" for kind in KINDS
                                      for role in ROLES})
MAX_SHARDS = 8
WAIT_S = 120.0
DURING_AFTER_S = 1.0


async def join_network(network: LoopbackNetwork, member: str, ports: Sequence[int],
                       pid: int) -> None:
    """Make a process started mid-run a member of the loopback network: its own cgroup and
    connection mark, so partitions can name it (the launcher's processes get theirs at
    ``create``)."""
    if member in network.ports:
        await network.place(member, pid)
        return
    (network.root / network.group / member).mkdir(parents=True, exist_ok=True)
    network.ports[member] = list(ports)
    network.members = sorted(network.ports)
    network.mark[member] = max(network.mark.values(), default=0) + 1
    await network.place(member, pid)
    await run_command("iptables", "-w", "-t", "mangle", "-A", network.mangle_chain, "-m",
                      "cgroup", "--path", network.cgroup_path(member), "-m", "conntrack",
                      "--ctstate", "NEW", "-j", "CONNMARK", "--set-mark",
                      str(network.mark[member]))


class ShardAdd:
    """One shard added per window; optionally a second fault (``during``) on a role."""

    def __init__(self, name: str, cut: ClusterUnderTest, *, network: LoopbackNetwork | None,
                 during: Nemesis | None = None, role: str | None = None,
                 max_shards: int = MAX_SHARDS, wait_s: float = WAIT_S) -> None:
        self.name = name
        self.cut = cut
        self.network = network
        self.during = during
        self.role = role
        self.max_shards = max_shards
        self.wait_s = wait_s
        self._migration: str | None = None
        self._shard: str | None = None
        self._during_started = False

    # -- coordinator calls --------------------------------------------------------------

    async def _coordinator_urls(self) -> list[str]:
        leader = await self.cut.coordinator_leader()
        urls = self.cut.plan.coordinator_urls()
        if leader:
            first = self.cut.url_of(leader)
            urls = [first] + [u for u in urls if u != first]
        return urls

    async def _migration_record(self, migration: str) -> dict[str, Any] | None:
        for url in await self._coordinator_urls():
            status, body = await asyncio.to_thread(
                http_json, f"{url}/admin/migrations/{migration}", 5.0, auth_headers())
            if status == 200 and isinstance(body, dict):
                return body
        return None

    async def _wait_finished(self, migration: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.wait_s
        record: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            record = await self._migration_record(migration) or record
            if record is not None and record.get("state") in FINISHED:
                break
            await asyncio.sleep(0.5)
        if record is None:
            return {"state": "unknown", "error": "no coordinator answered"}
        out = {k: record.get(k) for k in ("state", "keys_moved", "keys_total", "bytes_moved",
                                          "error")}
        if out["state"] not in FINISHED:
            out["error"] = f"still {out['state']} after {self.wait_s:.0f} s"
            out["state"] = "timeout"
        return out

    # -- the window -----------------------------------------------------------------------

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        if self.cut.standalone or self.cut.in_containers:
            raise NemesisError(f"{self.name} needs a local cluster with coordinators")
        self._migration = self._shard = None
        self._during_started = False
        cmap = await self.cut.cluster_map() or {}
        shards = len(cmap.get("shards") or {})
        if shards >= int(params.get("max_shards", self.max_shards)):
            return {"skipped": f"{shards} shards already (max {self.max_shards})",
                    "resolved_targets": ["none"]}
        answer: Any = None
        status = 0
        for url in await self._coordinator_urls():
            status, answer = await asyncio.to_thread(http_post_json, f"{url}/admin/shards",
                                                     {}, 15.0)
            if status:
                break
        if status != 202 or not isinstance(answer, dict):
            return {"refused": {"status": status, "answer": answer},
                    "resolved_targets": ["none"]}
        self._migration, self._shard = str(answer["migration"]), str(answer["shard"])
        self.cut.plan.shards += 1  # the launcher's readiness counts the map's shards
        started = await self._start_members(self._shard)
        detail: dict[str, Any] = {"migration": self._migration, "shard": self._shard,
                                  "started_nodes": started}
        if self.during is not None:
            await asyncio.sleep(float(params.get("during_after_s", DURING_AFTER_S)))
            victims = await self._resolve(self._shard)
            if victims:
                detail["during"] = {"fault": self.during.name, "role": self.role,
                                    "targets": victims, **await self.during.start(victims)}
                self._during_started = True
            else:
                detail["during"] = {"fault": self.during.name, "role": self.role,
                                    "skipped": "no target resolved"}
        return {**detail, "resolved_targets": detail.get("during", {}).get("targets")
                or started}

    async def _start_members(self, shard: str) -> list[str]:
        specs = await asyncio.to_thread(start_shard_members, self.cut.launcher, shard)
        if self.network is not None:
            for spec in specs:
                await join_network(self.network, spec.id, [spec.port], self.cut.pid_of(spec.id))
        return [spec.id for spec in specs]

    async def _resolve(self, new_shard: str) -> list[str]:
        if self.role == "coordinator-leader":
            leader = await self.cut.coordinator_leader()
            return [leader] if leader else []
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            cmap = await self.cut.cluster_map() or {}
            shards = cmap.get("shards") or {}
            if self.role == "target":
                primary = (shards.get(new_shard) or {}).get("primary")
                if primary:
                    return [str(primary)]
            else:
                primaries = sorted(str(s["primary"]) for sid, s in shards.items()
                                   if sid != new_shard and s.get("primary"))
                if primaries:  # the first source shard's primary: the one every seed hits
                    return primaries[:1]
            await asyncio.sleep(0.3)
        return []

    async def stop(self) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if self._during_started and self.during is not None:
            detail["during_stop"] = await self.during.stop()
            self._during_started = False
        if self._migration is not None:
            detail["migration"] = self._migration
            detail["shard"] = self._shard
            detail.update(await self._wait_finished(self._migration))
            if detail["state"] in ("failed", "aborted"):
                self.cut.plan.shards -= 1  # the half-filled shard leaves the map
            self._migration = None
        return detail

    async def heal_all(self) -> None:
        if self.during is not None:
            await self.during.heal_all()


def build(name: str, cut: ClusterUnderTest, faults: dict[str, Nemesis],
          network: object, partition: Callable[[str], Nemesis] | None) -> Nemesis:
    """The nemesis for ``name``: ``faults`` holds the run's ``kill`` and ``pause`` process
    nemeses; ``partition(name)`` builds a loopback partition (None when there is none)."""
    loopback = network if isinstance(network, LoopbackNetwork) else None
    if name == "reshard-add":
        return ShardAdd(name, cut, network=loopback)
    kind, role = next((k, r) for k in KINDS for r in ROLES if name == f"reshard-add-{k}-{r}")
    if kind == "partition":
        if partition is None:
            raise NemesisError(f"{name} needs root, iptables and cgroup2 (the loopback "
                               "partition); not available here")
        during = partition(f"{name}/partition")
    else:
        during = faults[kind]
    return ShardAdd(name, cut, network=loopback, during=during, role=role)
