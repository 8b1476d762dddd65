"""Finding and stopping the processes of a local cluster from its files alone.

``shardkv down`` runs in a different process from the launcher that started the cluster, so
all it has is ``DIR/launcher.pid`` and the pids in ``DIR/cluster.json``. Pids get recycled:
before signalling one, check that it is alive (a zombie is not) and that its command line is
ours, so a stale file never makes ``down`` kill an unrelated process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

STOP_GRACE_S = 10.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def is_shardkv_process(pid: int) -> bool:
    """Guard against a recycled pid: only signal processes whose command line is ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)  # no /proc (not Linux): trust the pid file
    return b"shardkv" in cmdline


def stop_described(directory: Path, grace: float = STOP_GRACE_S) -> list[int]:
    """``shardkv down``: stop what ``DIR/cluster.json`` and ``DIR/launcher.pid`` name.

    The launcher (if one runs) is asked first, since it stops its children in order; any
    process still alive afterwards is signalled directly. Returns the pids signalled."""
    signalled: list[int] = []
    # Read the pids before the launcher is asked to stop: it deletes cluster.json as it exits,
    # and a process restarted by `shardkv restart --rolling` is not its child.
    described_pids = _described_pids(directory)
    pid_file = directory / "launcher.pid"
    if pid_file.is_file():
        with contextlib.suppress(ValueError):
            launcher_pid = int(pid_file.read_text().strip())
            if pid_alive(launcher_pid) and is_shardkv_process(launcher_pid):
                os.kill(launcher_pid, signal.SIGTERM)
                signalled.append(launcher_pid)
                _wait_gone([launcher_pid], grace + 5.0)
    pids = [p for p in described_pids if pid_alive(p) and is_shardkv_process(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
    leftover = _wait_gone(pids, grace)
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(leftover, 5.0)
    for name in ("cluster.json", "launcher.pid"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    return signalled


def _described_pids(directory: Path) -> list[int]:
    """The pids ``DIR/cluster.json`` names (empty when there is none or it is unreadable)."""
    pids: list[int] = []
    cluster_file = directory / "cluster.json"
    if cluster_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            described = json.loads(cluster_file.read_text())
            for entry in described.get("nodes", []) + described.get("coordinators", []):
                pid = entry.get("pid")
                if isinstance(pid, int):
                    pids.append(pid)
    return pids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive
