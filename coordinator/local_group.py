"""Run a coordinator group as real processes on 127.0.0.1 (tests, benchmarks, demos).

Each member is ``python -m shardkv.coordinator.cli`` with its own data directory and
log file, on free ports. Fast Raft timings are the default here (elections in well under a
second) so tests stay quick; pass ``env`` to override.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardkv.cluster.local_processes import free_port, spawn_logged, stop_children

FAST_RAFT_ENV = {
    "SHARDKV_RAFT_ELECTION_MIN_S": "0.3",
    "SHARDKV_RAFT_ELECTION_MAX_S": "0.6",
    "SHARDKV_RAFT_HEARTBEAT_S": "0.05",
    "SHARDKV_RAFT_CONNECTION_TIMEOUT_S": "1.0",
    "SHARDKV_RAFT_CONNECTION_RETRY_S": "0.3",
    "SHARDKV_RAFT_LEADER_FALLBACK_S": "1.5",
}


@dataclass
class CoordinatorProcess:
    id: str
    http_port: int
    raft_port: int
    data_dir: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    extra_args: list[str] = field(default_factory=list)
    knows: list[str] | None = None  # ids of the members it is told about (None: all)
    env: dict[str, str] = field(default_factory=dict)  # on top of the group's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def raft(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout_s: float = 5.0) -> tuple[int, Any]:
    """A blocking JSON request (for harness code run in threads, and scripts)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class LocalGroup:
    def __init__(self, base_dir: str, size: int = 3, *, init_shards: int | None = None,
                 replication_factor: int = 1, env: dict[str, str] | None = None) -> None:
        self.base_dir = base_dir
        self.env = {**os.environ, **FAST_RAFT_ENV, **(env or {})}
        self.members = [
            CoordinatorProcess(f"c{i}", free_port(), free_port(),
                               os.path.join(base_dir, f"c{i}"))
            for i in range(1, size + 1)
        ]
        self.init_shards = init_shards
        self.replication_factor = replication_factor

    def member(self, member_id: str) -> CoordinatorProcess:
        return next(m for m in self.members if m.id == member_id)

    def command(self, member: CoordinatorProcess) -> list[str]:
        peers = ",".join(f"{m.id}={m.raft}" for m in self.members
                         if m is not member and (member.knows is None or m.id in member.knows))
        args = [sys.executable, "-m", "shardkv.coordinator.cli", "--id", member.id,
                "--listen", f"127.0.0.1:{member.http_port}", "--raft", member.raft,
                "--data-dir", member.data_dir, "--commit-timeout", "3"]
        if peers:
            args += ["--peers", peers]
        if self.init_shards:
            args += ["--init-shards", str(self.init_shards),
                     "--replication-factor", str(self.replication_factor)]
        return args + member.extra_args

    def start(self, member: CoordinatorProcess) -> None:
        os.makedirs(member.data_dir, exist_ok=True)
        member.log_path = os.path.join(self.base_dir, f"{member.id}.log")
        member.proc = spawn_logged(self.command(member), Path(member.log_path),
                                   env={**self.env, **member.env})

    def start_all(self) -> None:
        for member in self.members:
            self.start(member)

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` to every member (a paused one is woken first), SIGKILL after 10 s."""
        stop_children([m.proc for m in self.members if m.proc is not None], sig=sig)

    def ready_status(self, member: CoordinatorProcess) -> dict[str, Any] | None:
        try:
            _, body = http_json("GET", f"{member.url}/ready", timeout_s=1.0)
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def wait_leader(self, timeout_s: float = 15.0,
                          among: list[CoordinatorProcess] | None = None) -> CoordinatorProcess:
        """The member that all running ``among`` agree is the leader (and that says so)."""
        deadline = time.monotonic() + timeout_s
        candidates = among or [m for m in self.members if m.running]
        while time.monotonic() < deadline:
            views = await asyncio.gather(
                *(asyncio.to_thread(self.ready_status, m) for m in candidates)
            )
            leaders = {v.get("leader") for v in views if v}
            if len(leaders) == 1 and None not in leaders and all(v and v["ready"] for v in views):
                leader_id = leaders.pop()
                leader = self.member(str(leader_id))
                view = views[candidates.index(leader)] if leader in candidates else None
                if view and view.get("is_leader"):
                    return leader
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no agreed leader within {timeout_s}s")

    def logs(self) -> str:
        out = []
        for member in self.members:
            if member.log_path and os.path.exists(member.log_path):
                with open(member.log_path, encoding="utf-8", errors="replace") as f:
                    out.append(f"--- {member.id} ---\n" + f.read()[-4000:])
        return "\n".join(out)
