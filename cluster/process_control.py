"""Stopping one process of a local cluster gracefully and starting it again.

Two owners of processes implement ``rolling_restart.ProcessControl``:

- ``OwnedProcesses``: a ``LocalCluster`` in this process (tests, benchmarks, the launcher),
  which holds the ``Popen`` objects and reaps its children;
- ``DescribedProcesses``: a cluster started by another process (``shardkv up --detach``),
  known only from ``DIR/launcher.json`` (the plan) and ``DIR/cluster.json`` (the pids). A
  process restarted here is started with the plan's command line and its new pid is written
  to ``cluster.json``, so ``shardkv down`` finds it.

Both stop with SIGTERM and wait (a primary hands its role over first, a coordinator leader
its Raft leadership); SIGKILL only after ``timeout``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from shardkv.cluster.launcher import (
    ClusterPlan,
    LaunchError,
    LocalCluster,
    http_get_json,
    write_json_atomically,
)
from shardkv.cluster.local_processes import is_shardkv_process, pid_alive

ADOPT_WAIT_S = 1.5  # a supervising launcher restarts a dead process within 0.5 s


class OwnedProcesses:
    """``ProcessControl`` over a ``LocalCluster`` owned by this process."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def url_of(self, process_id: str) -> str:
        return self.cluster.spec(process_id).url

    def coordinator_ids(self) -> list[str]:
        return [c.id for c in self.cluster.plan.coordinators]

    def stop_gracefully(self, process_id: str, timeout: float) -> int | None:
        proc = self.cluster.procs[process_id]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def start_again(self, process_id: str) -> None:
        self.cluster.restart(process_id)


class DescribedProcesses:
    """``ProcessControl`` over a cluster known from its directory's files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        plan_file = directory / "launcher.json"
        if not plan_file.is_file() or not (directory / "cluster.json").is_file():
            raise LaunchError(f"no running cluster in {directory} (no launcher.json or "
                              f"cluster.json; start one with `shardkv up --detach`)")
        self.cluster = LocalCluster(directory, ClusterPlan.load(plan_file))

    def _described(self) -> dict[str, list[dict[str, object]]]:
        return json.loads((self.directory / "cluster.json").read_text())

    def _set_pid(self, process_id: str, pid: int) -> None:
        described = self._described()
        for entry in described.get("nodes", []) + described.get("coordinators", []):
            if entry.get("id") == process_id:
                entry["pid"] = pid
        write_json_atomically(self.directory / "cluster.json", described)

    def _pid(self, process_id: str) -> int | None:
        described = self._described()
        for entry in described.get("nodes", []) + described.get("coordinators", []):
            if entry.get("id") == process_id and isinstance(entry.get("pid"), int):
                return int(entry["pid"])  # type: ignore[arg-type]
        return None

    def url_of(self, process_id: str) -> str:
        return self.cluster.spec(process_id).url

    def coordinator_ids(self) -> list[str]:
        return [c.id for c in self.cluster.plan.coordinators]

    def stop_gracefully(self, process_id: str, timeout: float) -> int | None:
        pid = self._pid(process_id)
        if pid is None or not pid_alive(pid) or not is_shardkv_process(pid):
            return None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
            return -signal.SIGKILL
        return None  # not our child: its exit status went to the launcher

    def start_again(self, process_id: str) -> None:
        spec = self.cluster.spec(process_id)
        # A launcher started with --supervise restarts a dead child itself: adopt that one.
        deadline = time.monotonic() + ADOPT_WAIT_S
        while time.monotonic() < deadline:
            status, _ = http_get_json(f"{spec.url}/health", timeout=0.3)
            if status == 200:
                return
            time.sleep(0.1)
        proc = self.cluster.start_process(spec)
        self._set_pid(process_id, proc.pid)
