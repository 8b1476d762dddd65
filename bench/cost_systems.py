"""The systems the per-request cost benchmark starts: a shardkv node alone, a replicated
shardkv shard (primary + 2 replicas, majority writes), one etcd member, a 3-member etcd.

Each is a context manager yielding a ``Running``: the URL the load goes to and the pids whose
CPU is the system's (all members of a replicated system, so a put's cost includes what the
replicas spend on it). A shardkv system is started from a ``Variant``: environment variables
(``SHARDKV_UVLOOP=0``) and, optionally, another checkout's Python (``--b-python``: that
virtualenv's editable install of shardkv is what runs), which is how two versions of the code
are compared in alternating rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardkv.cluster.launcher import ClusterPlan, LocalCluster, ProcessSpec

from bench.etcd_cluster import etcd_cluster, leader_index, spawn_all, stop_all, wait_etcd
from bench.etcd_reference import etcd_member
from bench.proc_stats import process_cpu_seconds
from bench.shardkv_node import shardkv_node


@dataclass(frozen=True, slots=True)
class Variant:
    """One side of an A/B comparison: its name, its environment, its interpreter."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable


@dataclass(slots=True)
class Running:
    url: str
    pids: tuple[int, ...]
    detail: dict[str, Any] = field(default_factory=dict)

    def cpu_by_pid(self) -> dict[int, float]:
        return {pid: process_cpu_seconds(pid) for pid in self.pids}


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Children inherit ``env`` (the launcher and ServerProcess pass os.environ on)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _json_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def shardkv_single(work: Path, variant: Variant, fsync: str) -> Iterator[Running]:
    with _environment(variant.env):
        server = shardkv_node(work, fsync=fsync, name=f"shardkv-{variant.name}")
        server.argv[0] = variant.python
        server.start()
    try:
        status = _json_get(server.url + "/v1/status")
        yield Running(server.url, (server.pid,), {"event_loop": status.get("event_loop")})
    finally:
        server.stop()


class _Plan(ClusterPlan):
    """A cluster plan whose processes run another interpreter (another checkout's venv)."""

    python: str = sys.executable

    def argv(self, spec: ProcessSpec) -> list[str]:
        return [self.python, *super().argv(spec)[1:]]


async def _wait_streaming(primary_url: str, replicas: int, within: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            status = await asyncio.to_thread(_json_get, f"{primary_url}/v1/replication")
            connected = sum(1 for r in status.get("replicas", []) if r["connected"])
            if connected == replicas and status.get("lease") == "valid":
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the primary never streamed to all its replicas")


@contextlib.contextmanager
def shardkv_replicated(work: Path, variant: Variant, fsync: str, *, shards: int = 1,
                       replicas: int = 3) -> Iterator[Running]:
    """``shards`` x ``replicas`` with one coordinator; the load goes to shard s1's primary
    (``detail['primaries']`` has every shard's). Pids: every node (not the coordinator,
    which a put does not reach)."""
    directory = work / f"cluster-{variant.name}"
    plan = _Plan.new(directory, shards=shards, replicas=replicas, coordinators=1,
                     engine="memory", fsync=fsync)
    plan.python = variant.python
    cluster = LocalCluster(directory, plan)
    with _environment(variant.env):
        cluster.start()
    try:
        cluster.wait_ready(90)
        cmap = _json_get(f"{plan.coordinators[0].url}/v1/map")
        primaries = {}
        for name, shard in sorted(cmap["shards"].items()):
            url = cmap["nodes"][shard["primary"]]["url"]
            asyncio.run(_wait_streaming(url, replicas - 1))
            primaries[name] = url
        first = cmap["shards"]["s1"]
        members = [first["primary"]] + [n for n in first["members"] if n != first["primary"]]
        pids = [cluster.pid_of(n) for n in members]
        status = _json_get(primaries["s1"] + "/v1/status")
        every_node = [cluster.pid_of(spec.id) for spec in plan.nodes]
        yield Running(primaries["s1"], tuple(p for p in pids if p is not None),
                      {"primaries": primaries, "event_loop": status.get("event_loop"),
                       "coordinators": plan.coordinator_urls(),
                       "node_pids": [p for p in every_node if p is not None]})
    finally:
        cluster.stop()


@contextlib.contextmanager
def etcd_single(work: Path) -> Iterator[Running]:
    server = etcd_member(work)
    server.start()
    try:
        yield Running(server.url, (server.pid,))
    finally:
        server.stop()


@contextlib.contextmanager
def etcd_three(work: Path, binary: str) -> Iterator[Running]:
    members = etcd_cluster(work, binary)
    procs = spawn_all(members)
    try:
        urls = [m.url for m in members]
        asyncio.run(wait_etcd(urls))
        leader = leader_index(urls)
        pids = [procs[leader].pid] + [p.pid for i, p in enumerate(procs) if i != leader]
        yield Running(urls[leader], tuple(pids))
    finally:
        stop_all(procs)
