"""Online resharding as a chaos action: add, reweight and remove shards while the workloads
run (issue 12, "Chaos").

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

``reshard-weight`` toggles the weight of the lowest-numbered shard of the ring between 1
and 2 (``PUT /admin/shards/{id}/weight``). ``reshard-remove`` drains the highest-numbered
shard of the ring into the others (``DELETE /admin/shards/{id}``) while it has more than
``min_shards``, and once the migration is ``done`` stops the retired members through the
launcher, as ``shardkv shard remove --wait`` does. Its ``reshard-remove-*`` variants aim the
second fault at ``-source`` the removed shard's primary, ``-target`` the primary of the first
remaining shard, or ``-coordinator-leader``. Adds stop at ``max_shards`` (each add starts
``replicas`` new processes on a small machine).
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
from shardkv.cluster.retired_watches import wait_watches_closed
from shardkv.cluster.shard_members import start_shard_members

if TYPE_CHECKING:
    from shardkv.chaos.cluster_under_test import ClusterUnderTest

FINISHED = ("done", "failed", "aborted")
ROLES = ("source", "target", "coordinator-leader")
KINDS = ("kill", "pause", "partition")
OPS = ("add", "remove")  # the operations with ``-{kind}-{role}`` variants
FAULTS = frozenset({"reshard-add", "reshard-remove", "reshard-weight"}
                   | {f"reshard-{op}-{kind}-{role}" for op in OPS for kind in KINDS
                      for role in ROLES})
MAX_SHARDS = 8
MIN_SHARDS = 2
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


def _number(shard: str) -> int:
    digits = shard.lstrip("s")
    return int(digits) if digits.isdigit() else 0


class ShardAdd:
    """One ring change per window (``op``: add, remove or weight); optionally a second fault
    (``during``) on a role."""

    def __init__(self, name: str, cut: ClusterUnderTest, *, network: LoopbackNetwork | None,
                 during: Nemesis | None = None, role: str | None = None,
                 max_shards: int = MAX_SHARDS, wait_s: float = WAIT_S,
                 op: str = "add") -> None:
        self.name = name
        self.op = op
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
                                          "error", "retired")}
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
        request = self._request(cmap, params)
        if isinstance(request, str):
            return {"skipped": request, "resolved_targets": ["none"]}
        method, path, body = request
        answer: Any = None
        status = 0
        for url in await self._coordinator_urls():
            status, answer = await asyncio.to_thread(http_post_json, f"{url}{path}", body,
                                                     15.0, method)
            if status:
                break
        if status != 202 or not isinstance(answer, dict):
            return {"refused": {"status": status, "answer": answer},
                    "resolved_targets": ["none"]}
        self._migration, self._shard = str(answer["migration"]), str(answer["shard"])
        detail: dict[str, Any] = {"migration": self._migration, "shard": self._shard,
                                  "op": self.op, **({"weight": body["weight"]}
                                                    if "weight" in body else {})}
        started: list[str] = []
        if self.op == "add":
            self.cut.plan.shards += 1  # the launcher's readiness counts the map's shards
            started = await self._start_members(self._shard)
            detail["started_nodes"] = started
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
                or started or [self._shard]}

    def _request(self, cmap: dict[str, Any],
                 params: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | str:
        """(method, path, body) of this window's change, or why it is skipped."""
        ring = dict((cmap.get("ring") or {}).get("shards") or {})
        weights = {sid: int((w or {}).get("weight", 1)) if isinstance(w, dict) else int(w)
                   for sid, w in ring.items()}
        in_ring = sorted(weights, key=_number)
        if self.op == "add":
            shards = len(cmap.get("shards") or {})
            limit = int(params.get("max_shards", self.max_shards))
            if shards >= limit:
                return f"{shards} shards already (max {limit})"
            return "POST", "/admin/shards", {}
        if self.op == "remove":
            limit = int(params.get("min_shards", MIN_SHARDS))
            if len(in_ring) <= limit:
                return f"{len(in_ring)} shards in the ring (min {limit})"
            return "DELETE", f"/admin/shards/{in_ring[-1]}", {}
        if not in_ring:
            return "no shard in the ring"
        shard = in_ring[0]
        return "PUT", f"/admin/shards/{shard}/weight", {
            "weight": 2 if weights[shard] == 1 else 1}

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
            # An add's target is its new shard; a remove's source is the shard it drains.
            own_role = "target" if self.op == "add" else "source"
            if self.role == own_role:
                primary = (shards.get(new_shard) or {}).get("primary")
                if primary:
                    return [str(primary)]
            else:
                primaries = sorted(str(s["primary"]) for sid, s in shards.items()
                                   if sid != new_shard and s.get("primary"))
                if primaries:  # the first other shard's primary: the one every seed hits
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
            if self.op == "add" and detail["state"] in ("failed", "aborted"):
                self.cut.plan.shards -= 1  # the half-filled shard leaves the map
            if self.op == "remove" and detail["state"] == "done":
                self.cut.plan.shards -= 1
                detail["stopped_nodes"] = await self._stop_retired(detail.get("retired") or [],
                                                                   detail)
            self._migration = None
        return detail

    async def _stop_retired(self, nodes: list[str], detail: dict[str, Any]) -> list[str]:
        """The members a remove retired: drained and out of the map, stopped on purpose (the
        launcher does not restart them), once no watch still reads the shard's writes from
        them (cluster/retired_watches.py), within a grace period."""
        retiring = set(nodes)
        began = time.monotonic()
        still_open = await asyncio.to_thread(wait_watches_closed, [
            spec.url for spec in self.cut.plan.nodes if spec.id in retiring])
        detail["retired_watches"] = {"waited_s": round(time.monotonic() - began, 2),
                                     "still_open": still_open}
        stopped = []
        for node in nodes:
            try:
                await asyncio.to_thread(self.cut.launcher.stop_one, node)
            except KeyError:  # not a process of this run
                continue
            stopped.append(node)
        # Out of the plan too, as `shardkv shard remove --wait` takes them out of
        # launcher.json: the readiness check must not wait for them.
        plan = self.cut.plan
        plan.nodes = [spec for spec in plan.nodes if spec.id not in set(stopped)]
        return stopped

    async def heal_all(self) -> None:
        if self.during is not None:
            await self.during.heal_all()


def build(name: str, cut: ClusterUnderTest, faults: dict[str, Nemesis],
          network: object, partition: Callable[[str], Nemesis] | None) -> Nemesis:
    """The nemesis for ``name``: ``faults`` holds the run's ``kill`` and ``pause`` process
    nemeses; ``partition(name)`` builds a loopback partition (None when there is none)."""
    loopback = network if isinstance(network, LoopbackNetwork) else None
    if name in ("reshard-add", "reshard-remove", "reshard-weight"):
        return ShardAdd(name, cut, network=loopback, op=name.removeprefix("reshard-"))
    op, kind, role = next((o, k, r) for o in OPS for k in KINDS for r in ROLES
                          if name == f"reshard-{o}-{k}-{r}")
    if kind == "partition":
        if partition is None:
            raise NemesisError(f"{name} needs root, iptables and cgroup2 (the loopback "
                               "partition); not available here")
        during = partition(f"{name}/partition")
    else:
        during = faults[kind]
    return ShardAdd(name, cut, network=loopback, during=during, role=role, op=op)
