"""The cluster a chaos run drives: started through the launcher, known process by process.

A run needs more than ``shardkv up``: the pid, data directory and role of every process at
any moment (a restarted node has a new pid; a failover moves the primary), a way to restart
exactly one process with its data, a health check, and a notion of *settled* (every member
ready and the map unchanged for a while) before the final reads. This module wraps
``cluster.launcher.LocalCluster`` for that, in two topologies:

- ``cluster``: coordinators and shards of replicated nodes; workload clients route through
  the coordinators' map. Roles (``primary of s1``, ``coordinator leader``) are resolved from
  the live map when a fault starts.
- ``standalone``: one node without coordinators (the primary of a one-node shard). Clients
  reach it in direct mode through a :class:`DelayProxy`, so the partition and packet faults
  act on the client's link. This is what runs when replication is not available: it still
  tests crash recovery (kill -9 under load loses no acknowledged write), pause, partitions of
  the client link, and WAL damage.

The launcher is synchronous (a process supervisor); every call into it runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shardkv.chaos.container_cluster import ContainerCluster
from shardkv.chaos.nemesis.delay_proxy import DelayProxy
from shardkv.chaos.nemesis.process import is_alive
from shardkv.cluster.cluster_token import auth_headers
from shardkv.cluster.launcher import (
    EXIT_WAIT_S,
    ClusterPlan,
    LocalCluster,
    ProcessSpec,
    http_get_json,
)
from shardkv.cluster.local_processes import HOST, free_port

log = logging.getLogger(__name__)

Topology = Literal["cluster", "standalone"]


# The launcher's blocking JSON GET: (status, body or None), 0 when nothing answered.
http_json = http_get_json


class StandalonePlan(ClusterPlan):
    """One node, no coordinator: the launcher's plan with the node's command line changed."""

    def argv(self, spec: ProcessSpec) -> list[str]:
        return [sys.executable, "-m", "shardkv.cluster.cli", "node", "--id", spec.id,
                "--data-dir", spec.data_dir, "--listen", f"{HOST}:{spec.port}",
                "--engine", self.engine, "--fsync", self.fsync]


@dataclass(frozen=True)
class ClusterShape:
    topology: Topology = "cluster"
    shards: int = 1
    replicas: int = 3
    coordinators: int = 1
    engine: str = "memory"
    fsync: str = "always"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str
    elapsed_s: float = 0.0


class ClusterUnderTest:
    """Start, observe, fault and stop one cluster for a chaos run: local processes, or with
    ``docker_image`` containers (:mod:`shardkv.chaos.container_cluster`; the cluster
    topology only)."""

    def __init__(self, directory: Path, shape: ClusterShape, *,
                 docker_image: str | None = None, run_id: str = "0") -> None:
        self.directory = directory
        self.shape = shape
        self.container_cluster: ContainerCluster | None = None
        self.client_proxy: DelayProxy | None = None
        if docker_image is not None:
            if shape.topology == "standalone":
                raise ValueError("the standalone topology runs as a local process only "
                                 "(its faults act on the client link's proxy)")
            self.container_cluster = ContainerCluster(
                directory, run_id=run_id, image=docker_image, shards=shape.shards,
                replicas=shape.replicas, coordinators=shape.coordinators,
                engine=shape.engine, fsync=shape.fsync)
            self.plan: ClusterPlan = self.container_cluster.plan
            self.launcher: LocalCluster = self.container_cluster
            return
        if shape.topology == "standalone":
            node = ProcessSpec("node", "n1", free_port(), str(directory / "nodes" / "n1"),
                               shard="s1")
            plan: ClusterPlan = StandalonePlan(shards=1, replicas=1, nodes=[node],
                                               engine=shape.engine, fsync=shape.fsync)
        else:
            plan = ClusterPlan.new(directory, shards=shape.shards, replicas=shape.replicas,
                                   coordinators=shape.coordinators, engine=shape.engine,
                                   fsync=shape.fsync)
        self.plan = plan
        self.launcher = LocalCluster(directory, plan)

    # -- identity --------------------------------------------------------------------------

    @property
    def standalone(self) -> bool:
        return self.shape.topology == "standalone"

    @property
    def in_containers(self) -> bool:
        return self.container_cluster is not None

    def node_ids(self) -> list[str]:
        return [n.id for n in self.plan.nodes]

    def coordinator_ids(self) -> list[str]:
        return [c.id for c in self.plan.coordinators]

    def pid_of(self, process_id: str) -> int:
        pid = self.launcher.pid_of(process_id)
        if pid is None:
            raise KeyError(f"{process_id} has never been started")
        return pid

    def data_dir_of(self, process_id: str) -> str:
        return self.launcher.spec(process_id).data_dir

    def url_of(self, process_id: str) -> str:
        return self.launcher.spec(process_id).url

    def client_endpoints(self) -> tuple[list[str], bool]:
        """(URLs, direct): where workload clients connect, and whether in direct mode."""
        if self.standalone:
            if self.client_proxy is None:
                raise RuntimeError("the client proxy is not started")
            host, port = self.client_proxy.address
            return [f"http://{host}:{port}"], True
        return self.plan.coordinator_urls(), False

    def describe(self) -> dict[str, Any]:
        return {"shape": self.shape.to_json(), **self.launcher.describe(),
                "restarts": dict(self.launcher.restarts)}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, timeout_s: float = 90.0, *,
                    on_spawn: Callable[[str, int], Awaitable[None]] | None = None) -> None:
        """Start every process and wait until the cluster is ready. ``on_spawn(id, pid)``
        runs for each process as soon as it exists, well before its interpreter has opened
        a connection (the loopback partition puts it in its cgroup there, so every connection
        it ever makes carries its mark)."""
        starter = self._start_standalone if self.standalone else self.launcher.start
        launching = asyncio.ensure_future(asyncio.to_thread(starter))
        seen: dict[str, int] = {}
        while True:
            if on_spawn is not None:
                for process_id, proc in list(self.launcher.procs.items()):
                    if seen.get(process_id) != proc.pid:
                        seen[process_id] = proc.pid
                        await on_spawn(process_id, proc.pid)
            if launching.done():
                break
            await asyncio.sleep(0.02)
        await launching  # raises what the launcher raised
        if self.standalone:
            node = self.plan.nodes[0]
            self.client_proxy = DelayProxy(HOST, node.port, name="client->n1")
            await self.client_proxy.start()
        health = await self.wait_ready(timeout_s)
        if not health.ok:
            raise RuntimeError(f"the cluster did not become ready in {timeout_s:.0f} s: "
                               f"{health.reason} (logs in {self.directory / 'logs'})")

    def _start_standalone(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for spec in self.plan.nodes:
            self.launcher.start_process(spec)
        self.launcher.write_cluster_file()

    async def stop(self) -> None:
        if self.client_proxy is not None:
            await self.client_proxy.close()
        await asyncio.to_thread(self.launcher.stop)

    async def restart(self, process_id: str) -> int:
        """Start a killed process again with the same data and port (the kill nemesis's
        ``restart`` callback)."""
        return await asyncio.to_thread(self.launcher.restart, process_id)

    def exited(self, process_id: str) -> int | None:
        """The exit status of a process that is not running (None while it runs). A process
        that is dying counts as exited once it is gone: after a failpoint's ``os._exit`` or a
        SIGKILL, the leader is a zombie at once but cannot be reaped while another of its
        threads finishes a syscall (a WAL fdatasync on a busy disk), and ``poll`` says
        "running" meanwhile. Blocks up to ``EXIT_WAIT_S`` for that: call it in a thread."""
        proc = self.launcher.procs.get(process_id)
        if proc is None:
            return None
        code = proc.poll()
        if code is None and not is_alive(proc.pid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(EXIT_WAIT_S)
        return code

    # -- observation -----------------------------------------------------------------------

    async def cluster_map(self) -> dict[str, Any] | None:
        """The map from the first coordinator that answers (None in standalone mode)."""
        for url in self.plan.coordinator_urls():
            status, body = await asyncio.to_thread(http_json, f"{url}/v1/map")
            if status == 200 and isinstance(body, dict):
                return body
        return None

    async def primaries(self) -> list[str]:
        """The current primary of every shard, in shard order."""
        if self.standalone:
            return [self.plan.nodes[0].id]
        cmap = await self.cluster_map() or {}
        shards = cmap.get("shards") or {}
        return [s["primary"] for _, s in sorted(shards.items()) if s.get("primary")]

    async def replicas_of_primary(self, primary: str) -> list[str]:
        cmap = await self.cluster_map() or {}
        for shard in (cmap.get("shards") or {}).values():
            if shard.get("primary") == primary:
                return [m for m in shard.get("members") or [] if m != primary]
        return []

    async def coordinator_leader(self) -> str | None:
        cmap = await self.cluster_map() or {}
        leader = cmap.get("leader")
        return str(leader) if leader else None

    async def readiness(self) -> Health:
        if self.standalone:
            node = self.plan.nodes[0]
            status, _ = await asyncio.to_thread(http_json, f"{node.url}/ready")
            return Health(status == 200, "ready" if status == 200 else
                          f"node {node.id} not ready ({status})")
        ok, reason = await asyncio.to_thread(self.launcher.readiness)
        return Health(ok, reason)

    async def wait_ready(self, timeout_s: float) -> Health:
        """Poll readiness until it holds or the deadline passes (the last reason is kept)."""
        started = time.monotonic()
        while True:
            health = await self.readiness()
            elapsed = round(time.monotonic() - started, 3)
            if health.ok or elapsed > timeout_s:
                return Health(health.ok, health.reason, elapsed)
            await asyncio.sleep(0.2)

    async def wait_settled(self, timeout_s: float, *, stable_s: float = 2.0) -> Health:
        """Ready, and the map version unchanged for ``stable_s`` (no failover in progress)."""
        started = time.monotonic()
        stable_since: float | None = None
        last_version: Any = None
        reason = "not ready"
        while time.monotonic() - started < timeout_s:
            health = await self.readiness()
            cmap = None if self.standalone else await self.cluster_map()
            version = None if cmap is None else cmap.get("version")
            now = time.monotonic()
            if health.ok and (stable_since is None or version != last_version):
                stable_since, last_version = now, version
            elif not health.ok:
                stable_since, reason = None, health.reason
            if stable_since is not None and now - stable_since >= stable_s:
                return Health(True, "settled", round(now - started, 3))
            await asyncio.sleep(0.25)
        return Health(False, reason, round(time.monotonic() - started, 3))

    async def digests(self) -> tuple[dict[str, dict[str, Any]] | None, str]:
        """``{shard: {member: digest}}`` from ``GET /v1/digest`` on each member, or None and
        the reason when the nodes do not serve digests (convergence is then skipped)."""
        if self.standalone:
            return None, "standalone topology: a one-node shard has nothing to converge"
        cmap = await self.cluster_map()
        if cmap is None:
            return None, "no coordinator answered /v1/map"
        out: dict[str, dict[str, Any]] = {}
        for sid, shard in sorted((cmap.get("shards") or {}).items()):
            out[sid] = {}
            for member in shard.get("members") or []:
                status, body = await asyncio.to_thread(
                    http_json, f"{self.url_of(member)}/v1/digest", 5.0, auth_headers())
                if status == 404:
                    return None, f"node {member} does not serve /v1/digest (404)"
                if status != 200 or not isinstance(body, dict):
                    out[sid][member] = None
                    continue
                # The hash and key count only: members at the same data may still differ in
                # bookkeeping (applied LSN of no-op records, timestamps).
                out[sid][member] = {k: body[k] for k in ("digest", "keys") if k in body} or body
        return out, "ok"

    def log_tails(self, lines: int = 5) -> dict[str, str]:
        return {s.id: self.launcher.log_tail(s, lines) for s in self.plan.processes}
