"""The one harness for local server processes: ports, spawning, stopping, finding them again.

Everything that runs shardkv (or a reference server) as a child process on this machine goes
through here: the launcher (``shardkv up``), the coordinator test group, the integration tests'
nodes, the benchmarks and the chaos harness. One place means one answer to the questions that
went wrong when each had its own copy:

- *Is this port free?* Checked the way our servers bind (``SO_REUSEADDR``, as aiohttp and
  pysyncobj do), so a port in TIME-WAIT after ``shardkv down`` counts as free, which it is
  for them. Without that, ``up`` right after ``down`` refused for about a minute.
- *Is it stopped?* SIGTERM, a grace period, SIGKILL of the process group, reap; and for
  ``shardkv down``, which did not start the processes, wait until the pids are gone and their
  ports can be bound again before returning.
- *Is this pid ours?* Pids get recycled: before signalling a pid read from a file, check that
  it is alive (a zombie is not) and that its command line is ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
PORT_RELEASE_TIMEOUT_S = 10.0


# -- ports ---------------------------------------------------------------------------------


# Listening ports are drawn below the kernel's ephemeral range: a port the OS hands out for
# bind(0) is one it also hands to outgoing connections, so between choosing it and the
# server binding it any client socket (a test's, a peer's) could take it, and a coordinator
# whose Raft port was taken stays out of its group. Below the range only another listener
# can collide, and only by choosing the same random port.
LISTEN_PORTS_FLOOR = 20000
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_floor() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(PORT_RANGE_FILE.read_text().split()[0])
    return None


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST, *, taken: set[int] | None = None) -> int:
    """A port nobody listens on right now, below the ephemeral range where the system has
    one (else the OS picks it). With ``taken``, also one not in that set, which is then
    added to it (ports distinct within one plan)."""
    floor = _ephemeral_floor()
    pool = range(LISTEN_PORTS_FLOOR, floor) if floor and floor > LISTEN_PORTS_FLOOR + 1000 \
        else None
    while True:
        if pool is not None:
            port = random.choice(pool)
            if not _bindable(host, port):
                continue
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server of ours could bind ``port`` now: bound with ``SO_REUSEADDR`` as
    aiohttp and pysyncobj bind, so TIME-WAIT leftovers of a stopped process do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_ports_free(ports: Iterable[int], timeout: float = PORT_RELEASE_TIMEOUT_S,
                    host: str = HOST) -> list[int]:
    """Wait until every port can be bound; returns those still busy at the deadline."""
    deadline = time.monotonic() + timeout
    busy = [p for p in ports if not port_is_free(p, host)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.05)
        busy = [p for p in busy if not port_is_free(p, host)]
    return busy


# -- children we start ---------------------------------------------------------------------


def spawn_logged(argv: Sequence[str], log_path: Path, *,
                 env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``, stdin closed, in a
    session of its own (a Ctrl-C in the terminal reaches only the parent, which then stops
    its children in order instead of leaving each to die on its own)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=dict(env) if env is not None else None,
                                start_new_session=True)


def stop_children(procs: Sequence[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S, *,
                  sig: int = signal.SIGTERM) -> None:
    """Signal every child (``sig``, SIGCONT first so a paused one can act on it), wait up to
    ``grace`` seconds in all, SIGKILL the process group of whatever is left, reap all."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(sig)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


def log_tail(path: Path, lines: int = 8, *, since: int = 0) -> str:
    """The last ``lines`` lines of a log, from byte offset ``since`` on (this run's part)."""
    try:
        with path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- processes named in files (``shardkv down``, ``shardkv node stop``) ----------------------


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


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def terminate_pids(pids: Sequence[int], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM (after SIGCONT) each pid, wait up to ``grace``, SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    leftover = wait_gone(pids, grace)
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(leftover, 5.0)


def described_ports(directory: Path) -> list[int]:
    """Every port the plan in ``DIR/launcher.json`` uses (HTTP and Raft)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        raw = json.loads((directory / "launcher.json").read_text())
        return [p for entry in raw.get("coordinators", []) + raw.get("nodes", [])
                for p in (entry.get("port"), entry.get("raft_port")) if isinstance(p, int)]
    return []


def stop_described(directory: Path, grace: float = STOP_GRACE_S) -> list[int]:
    """``shardkv down``: stop what ``DIR/cluster.json`` and ``DIR/launcher.pid`` name, and
    return only once every one of those processes has exited and the cluster's ports can be
    bound again, so an ``up`` right after it starts cleanly.

    The launcher (if one runs) is asked first, since it stops its children in order; any
    process still alive afterwards is signalled directly. Returns the pids of the processes it
    stopped (the launcher first, if one ran)."""
    cluster_file = directory / "cluster.json"

    def named_alive() -> list[int]:
        pids: list[int] = []
        with contextlib.suppress(ValueError, OSError, AttributeError):
            described = json.loads(cluster_file.read_text())
            for entry in described.get("nodes", []) + described.get("coordinators", []):
                pid = entry.get("pid")
                if isinstance(pid, int) and pid_alive(pid) and is_shardkv_process(pid):
                    pids.append(pid)
        return pids

    signalled = named_alive()  # stopped by the launcher, or below if it could not
    pid_file = directory / "launcher.pid"
    if pid_file.is_file():
        with contextlib.suppress(ValueError, ProcessLookupError):
            launcher_pid = int(pid_file.read_text().strip())
            if pid_alive(launcher_pid) and is_shardkv_process(launcher_pid):
                os.kill(launcher_pid, signal.SIGTERM)
                signalled.insert(0, launcher_pid)
                wait_gone([launcher_pid], grace + 5.0)
    # Whatever the launcher did not stop (or a launcher that is gone left behind).
    terminate_pids([p for p in dict.fromkeys(signalled + named_alive()) if pid_alive(p)], grace)
    if signalled:
        wait_ports_free(described_ports(directory))
    for name in ("cluster.json", "launcher.pid"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    return signalled
