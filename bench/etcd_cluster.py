"""A three-member etcd cluster on free ports, for the benchmarks that compare a replicated
shardkv with a replicated etcd (``replication_bench``, ``client_bench``).

A single etcd member commits after its own fsync only; a three-member cluster commits after a
majority has it, as shardkv's ``w=majority`` does: that is the fair peer of a shardkv cluster.
Defaults otherwise (fsync on every commit, ``--max-txn-ops`` large enough for a txn of 100).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.request
from pathlib import Path

from shardkv.cluster.local_processes import free_port

from bench.etcd_reference import MAX_TXN_OPS
from bench.server_process import ServerProcess

MEMBER_NAMES = ("e1", "e2", "e3")


def etcd_cluster(work: Path, binary: str) -> list[ServerProcess]:
    """Three etcd members on free ports (not started: see ``spawn_all``)."""
    peers = {n: f"http://127.0.0.1:{free_port()}" for n in MEMBER_NAMES}
    clients = {n: f"http://127.0.0.1:{free_port()}" for n in MEMBER_NAMES}
    initial = ",".join(f"{n}={peers[n]}" for n in MEMBER_NAMES)
    members = []
    for n in MEMBER_NAMES:
        argv = [binary, "--name", n, "--data-dir", str(work / f"etcd-{n}"),
                "--listen-client-urls", clients[n], "--advertise-client-urls", clients[n],
                "--listen-peer-urls", peers[n], "--initial-advertise-peer-urls", peers[n],
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--max-txn-ops", str(MAX_TXN_OPS),
                "--logger", "zap", "--log-level", "warn"]  # fmt: skip
        members.append(ServerProcess(n, argv, log_path=work / f"etcd-{n}.log", url=clients[n]))
    return members


def spawn_all(members: list[ServerProcess]) -> list[subprocess.Popen[bytes]]:
    """Start every member at once (``ServerProcess.start`` would wait for one member to be
    healthy, and a member waits for its peers before it is)."""
    procs = []
    for m in members:
        with open(m.log_path, "ab") as log:
            procs.append(subprocess.Popen(m.argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL every member and reap it. A benchmark's etcd data are thrown away, and a
    graceful stop costs seconds: the leader first tries to hand leadership over to a peer,
    which is stopping too."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)


def _json(url: str, body: bytes | None = None) -> dict[str, object]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=5) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


async def wait_etcd(urls: list[str], within: float = 30) -> None:
    """Until every member says it is healthy (it then has a leader), or raise."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ok = 0
        for url in urls:
            with contextlib.suppress(OSError, ValueError):
                health = await asyncio.to_thread(_json, f"{url}/health")
                if health.get("health") == "true":
                    ok += 1
        if ok == len(urls):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("etcd cluster did not become healthy")


def leader_index(urls: list[str]) -> int:
    """Which member leads (by ``/v3/maintenance/status``): a load sent to the leader skips
    the follower's forwarding hop, as shardkv's client goes straight to each shard's primary."""
    for index, url in enumerate(urls):
        with contextlib.suppress(OSError, ValueError):
            status = _json(f"{url}/v3/maintenance/status", b"{}")
            header = status.get("header")
            if isinstance(header, dict) and header.get("member_id") == status.get("leader"):
                return index
    raise RuntimeError("no etcd member says it is the leader")
