"""The local cluster: coordinators and storage nodes as processes on this machine.

``LocalCluster`` plans a cluster (ids, ports, data directories), starts every process, waits
until it is *ready* (every coordinator answers ``/ready``, the map has a primary and the full
member count for every shard, every node answers ``/ready``), writes ``DIR/cluster.json`` as
DESIGN.md specifies, and stops everything: SIGTERM first (graceful: nodes flush and close),
SIGKILL only for what is still alive after the grace period.

Layout of DIR::

    cluster.json            {"coordinators": [{"id", "url", "pid"}],
                             "nodes": [{"id", "url", "pid", "data_dir"}]}
    launcher.json           the plan (ids, ports, shape), reused on the next `up` so Raft peers
                            and data directories keep their addresses across restarts
    launcher.pid            the launcher process while it runs (what `shardkv down` signals)
    coordinators/c1/ ...    Raft journals
    nodes/n1/ ...           WAL, snapshots, engine files
    logs/<id>.log           each process's stdout and stderr

Processes run in their own session so a Ctrl-C in the terminal reaches only the launcher,
which then stops them in order instead of leaving each to die on its own.

This module is synchronous on purpose: it is a supervisor of processes, it has no event loop
to block, and plain ``subprocess``/``urllib`` keep it easy to reason about.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shardkv.cluster.cluster_credentials import TOKEN_FILE, ClusterCredentials
from shardkv.cluster.durable_file import write_atomically
from shardkv.cluster.local_processes import (
    HOST,
    STOP_GRACE_S,
    free_port,
    log_tail,
    port_is_free,
    spawn_logged,
    stop_children,
    wait_ports_free,
)

READY_TIMEOUT_S = 90.0
# A process stopped on purpose (`shardkv node stop`) is "stopped"; one that died is "exited".
RUNNING, STOPPED, EXITED = "running", "stopped", "exited"


class LaunchError(Exception):
    """The cluster could not be started (a process died, readiness timed out): the message
    says which process and where its log is."""


@dataclass
class ProcessSpec:
    """One process of the cluster: what to run and where it lives."""

    kind: str  # "coordinator" or "node"
    id: str
    port: int
    data_dir: str
    raft_port: int | None = None
    shard: str | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class ClusterPlan:
    """The shape of a local cluster and the addresses of its processes."""

    shards: int
    replicas: int
    coordinators: list[ProcessSpec] = field(default_factory=list)
    nodes: list[ProcessSpec] = field(default_factory=list)
    engine: str = "memory"
    fsync: str = "always"

    @classmethod
    def new(cls, directory: Path, *, shards: int, replicas: int, coordinators: int,
            engine: str = "memory", fsync: str = "always") -> ClusterPlan:
        if shards < 1 or replicas < 1 or coordinators < 1:
            raise ValueError("shards, replicas and coordinators must all be >= 1")
        plan = cls(shards=shards, replicas=replicas, engine=engine, fsync=fsync)
        taken: set[int] = set()  # ports distinct within the plan, not only free right now
        for i in range(1, coordinators + 1):
            cid = f"c{i}"
            plan.coordinators.append(ProcessSpec(
                "coordinator", cid, free_port(taken=taken),
                str(directory / "coordinators" / cid),
                raft_port=free_port(taken=taken)))
        for s in range(1, shards + 1):
            for r in range(1, replicas + 1):
                nid = f"n{(s - 1) * replicas + r}"
                plan.nodes.append(ProcessSpec(
                    "node", nid, free_port(taken=taken), str(directory / "nodes" / nid),
                    shard=f"s{s}"))
        return plan

    @classmethod
    def load(cls, path: Path) -> ClusterPlan:
        raw = json.loads(path.read_text())
        return cls(
            shards=raw["shards"], replicas=raw["replicas"],
            coordinators=[ProcessSpec(**c) for c in raw["coordinators"]],
            nodes=[ProcessSpec(**n) for n in raw["nodes"]],
            engine=raw.get("engine", "memory"), fsync=raw.get("fsync", "always"),
        )

    def save(self, path: Path) -> None:
        write_json_atomically(path, asdict(self))

    def same_shape(self, shards: int, replicas: int, coordinators: int) -> bool:
        return (self.shards, self.replicas, len(self.coordinators)) == (
            shards, replicas, coordinators)

    @property
    def processes(self) -> list[ProcessSpec]:
        return self.coordinators + self.nodes

    def coordinator_urls(self) -> list[str]:
        return [c.url for c in self.coordinators]

    def argv(self, spec: ProcessSpec) -> list[str]:
        """The command line of one process (``python -m shardkv.cluster.cli ...``)."""
        base = [sys.executable, "-m", "shardkv.cluster.cli"]
        if spec.kind == "coordinator":
            peers = ",".join(f"{c.id}={HOST}:{c.raft_port}"
                             for c in self.coordinators if c.id != spec.id)
            argv = [*base, "coordinator", "--id", spec.id, "--listen", f"{HOST}:{spec.port}",
                    "--raft", f"{HOST}:{spec.raft_port}", "--data-dir", spec.data_dir,
                    "--init-shards", str(self.shards),
                    "--replication-factor", str(self.replicas)]
            if peers:
                argv += ["--peers", peers]
            return argv
        return [*base, "node", "--id", spec.id, "--data-dir", spec.data_dir,
                "--listen", f"{HOST}:{spec.port}",
                "--coordinator", ",".join(self.coordinator_urls()),
                "--shard", spec.shard or "", "--engine", self.engine, "--fsync", self.fsync]


def write_json_atomically(path: Path, obj: Any) -> None:
    """Write, fsync and rename: a reader never sees half a file, a crash never leaves one."""
    write_atomically(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def http_get_json(url: str, timeout: float = 1.0,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or None); status 0 when nothing answered."""
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


# How long ``restart`` waits for a process that is exiting (killed, not yet reapable).
EXIT_WAIT_S = 30.0


class LocalCluster:
    """Starts, watches and stops the processes of a plan."""

    def __init__(self, directory: Path, plan: ClusterPlan) -> None:
        self.directory = directory
        self.plan = plan
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}
        self.stopped: set[str] = set()  # stopped on purpose: not restarted, not reported dead
        self._log_offsets: dict[str, int] = {}  # where this run's part of each log begins
        # Set by ``secure()`` (``shardkv up`` does), or found in the directory on a restart.
        self.credentials: ClusterCredentials | None = None
        # Extra environment per process id (a benchmark that puts a delay proxy in front of
        # each node has the node advertise the proxy: ``SHARDKV_ADVERTISE_URL``).
        self.process_env: dict[str, dict[str, str]] = {}

    def secure(self) -> ClusterCredentials:
        """Generate (or reuse) the cluster credential and Raft password in the directory;
        every process started from now on gets them (cluster/cluster_credentials.py)."""
        self.credentials = ClusterCredentials.for_directory(self.directory)
        return self.credentials

    # -- files -----------------------------------------------------------------------------

    @property
    def cluster_file(self) -> Path:
        return self.directory / "cluster.json"

    def log_path(self, spec: ProcessSpec) -> Path:
        return self.directory / "logs" / f"{spec.id}.log"

    def describe(self) -> dict[str, Any]:
        """cluster.json: the shape of DESIGN.md, plus each process's ``state`` (running,
        stopped on purpose, or exited) so `shardkv node start` knows what to bring back."""
        return {
            "coordinators": [{"id": c.id, "url": c.url, "pid": self._pid(c.id),
                              "state": self.state(c.id)} for c in self.plan.coordinators],
            "nodes": [{"id": n.id, "url": n.url, "pid": self._pid(n.id),
                       "data_dir": n.data_dir, "state": self.state(n.id)}
                      for n in self.plan.nodes],
        }

    def state(self, process_id: str) -> str:
        if process_id in self.stopped:
            return STOPPED
        proc = self.procs.get(process_id)
        return RUNNING if proc is not None and proc.poll() is None else EXITED

    def write_cluster_file(self) -> None:
        write_json_atomically(self.cluster_file, self.describe())

    def _pid(self, process_id: str) -> int | None:
        proc = self.procs.get(process_id)
        if proc is None or process_id in self.stopped:
            return None
        return proc.pid

    # -- start -----------------------------------------------------------------------------

    def start_process(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        Path(spec.data_dir).mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(spec)
        self._log_offsets[spec.id] = log_path.stat().st_size if log_path.exists() else 0
        env = dict(os.environ)
        env.setdefault("SHARDKV_LOG_FORMAT", "json")
        if self.credentials is None and (self.directory / TOKEN_FILE).is_file():
            self.secure()
        if self.credentials is not None:
            env.update(self.credentials.environment())
        env.update(self.process_env.get(spec.id, {}))
        proc = spawn_logged(self.plan.argv(spec), log_path, env=env)
        self.procs[spec.id] = proc
        self.stopped.discard(spec.id)
        return proc

    def prepare(self) -> None:
        """Refuse to start over ports another process listens on (a cluster started twice,
        or some other program). Checked as our servers bind (SO_REUSEADDR), so the TIME-WAIT
        left by a cluster just stopped is no obstacle; a port still held by a process that is
        exiting gets a few seconds to be released."""
        ports = {p: s.id for s in self.plan.processes
                 for p in (s.port, s.raft_port) if p is not None}
        busy = wait_ports_free([p for p in ports if not port_is_free(p)], timeout=5.0)
        if busy:
            names = ", ".join(f"{ports[p]}:{p}" for p in sorted(busy))
            raise LaunchError(f"ports in use by another program: {names} (check with "
                              f"`ss -ltnp`; or start a new cluster elsewhere with "
                              f"`shardkv up --dir OTHER_DIR`)")

    def start(self) -> None:
        """Start every process: the coordinators first, the nodes once the coordinators have
        bootstrapped the shards (a node registers into its shard)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self.plan.save(self.directory / "launcher.json")
        for spec in self.plan.coordinators:
            self.start_process(spec)
        self.write_cluster_file()
        # Nodes register into a shard by id: they can only once the map has its shards.
        self.wait_bootstrapped()
        for spec in self.plan.nodes:
            self.start_process(spec)
        self.write_cluster_file()

    def wait_bootstrapped(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until a coordinator serves a map with the plan's shards in it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            for c in self.plan.coordinators:
                status, cmap = http_get_json(f"{c.url}/v1/map")
                if status == 200 and isinstance(cmap, dict) and len(
                    cmap.get("shards") or {}
                ) >= self.plan.shards:
                    return
            time.sleep(0.1)
        raise LaunchError(f"the coordinators did not bootstrap the cluster within "
                          f"{timeout:.0f}s (logs in {self.directory / 'logs'})")

    def _check_alive(self) -> None:
        for spec in self.plan.processes:
            proc = self.procs.get(spec.id)
            if proc is not None and proc.poll() is not None and spec.id not in self.stopped:
                raise LaunchError(f"{spec.kind} {spec.id} exited with status {proc.returncode}; "
                                  f"log: {self.log_path(spec)}\n{self.log_tail(spec)}")

    def log_tail(self, spec: ProcessSpec, lines: int = 8) -> str:
        """The end of this run's part of a process's log."""
        return log_tail(self.log_path(spec), lines, since=self._log_offsets.get(spec.id, 0))

    def readiness(self) -> tuple[bool, str]:
        """Whether the whole cluster serves, and if not, the first thing that does not."""
        for c in self.plan.coordinators:
            status, _ = http_get_json(f"{c.url}/ready")
            if status != 200:
                return False, f"coordinator {c.id} not ready"
        status, cmap = http_get_json(f"{self.plan.coordinators[0].url}/v1/map")
        if status != 200 or not isinstance(cmap, dict):
            return False, "no map yet"
        shards = cmap.get("shards") or {}
        if len(shards) != self.plan.shards:
            return False, f"map has {len(shards)} of {self.plan.shards} shards"
        nodes = cmap.get("nodes") or {}
        for sid, shard in sorted(shards.items()):
            members = shard.get("members") or []
            if not shard.get("primary"):
                return False, f"shard {sid} has no primary"
            if len(members) < self.plan.replicas:
                return False, f"shard {sid} has {len(members)} of {self.plan.replicas} members"
            for m in members:
                if (nodes.get(m) or {}).get("status") != "up":
                    return False, f"node {m} of shard {sid} is not up"
        for n in self.plan.nodes:
            status, _ = http_get_json(f"{n.url}/ready")
            if status != 200:
                return False, f"node {n.id} not ready"
        return True, "ready"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        reason = "not started"
        while time.monotonic() < deadline:
            self._check_alive()
            ok, reason = self.readiness()
            if ok:
                return
            time.sleep(0.2)
        raise LaunchError(f"the cluster was not ready after {timeout:.0f}s: {reason} "
                          f"(logs in {self.directory / 'logs'})")

    # -- supervise and care ----------------------------------------------------------------

    def restart_dead(self) -> list[str]:
        """Restart every process that has exited (``--supervise``) unless it was stopped on
        purpose; returns their ids."""
        restarted = []
        for process_id in self.dead():
            try:
                self.restart(process_id)
            except LaunchError:
                continue  # its port is still held: try again on the next round
            restarted.append(process_id)
        return restarted

    def spec(self, process_id: str) -> ProcessSpec:
        for spec in self.plan.processes:
            if spec.id == process_id:
                return spec
        raise KeyError(f"no process {process_id!r} in this cluster")

    def pid_of(self, process_id: str) -> int | None:
        """The current pid of a process (a restarted one has a new pid)."""
        return self._pid(process_id)

    def kill(self, process_id: str) -> None:
        """SIGKILL one process and reap it (a crash, for tests and the chaos harness)."""
        proc = self.procs[process_id]
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self, process_id: str) -> int:
        """Start a stopped or killed process again, same data and port; returns its pid."""
        proc = self.procs.get(process_id)
        if proc is not None and proc.poll() is None:
            # Just killed, it may not be reapable yet: a SIGKILLed process whose leader is
            # already a zombie still exists while another of its threads finishes a syscall
            # (a WAL fdatasync on a busy disk), and ``poll`` says "running" until the last
            # thread is gone. Give it that long; a process that really runs is an error.
            try:
                proc.wait(EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                raise LaunchError(f"{process_id} is still running (pid {proc.pid})") from None
        spec = self.spec(process_id)
        busy = wait_ports_free([p for p in (spec.port, spec.raft_port) if p is not None])
        if busy:
            raise LaunchError(f"cannot start {process_id}: port {busy[0]} is in use")
        new = self.start_process(spec)
        self.restarts[process_id] = self.restarts.get(process_id, 0) + 1
        self.write_cluster_file()
        return new.pid

    def stop_one(self, process_id: str, grace: float = STOP_GRACE_S) -> int | None:
        """Stop one process on purpose (SIGTERM, then SIGKILL after ``grace``), wait until it
        has exited and its ports are free, and remember it as stopped so supervision leaves it
        down. Returns its exit status (None if it was not running)."""
        spec = self.spec(process_id)
        proc = self.procs.get(process_id)
        status = None
        if proc is not None:
            was_running = proc.poll() is None
            stop_children([proc], grace)
            status = proc.returncode if was_running else None
        self.stopped.add(process_id)
        wait_ports_free([p for p in (spec.port, spec.raft_port) if p is not None])
        self.write_cluster_file()
        return status

    def wait_answers(self, process_id: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until one process answers ``/health`` (it may still be catching up)."""
        spec = self.spec(process_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(process_id)
            if proc is None or proc.poll() is not None:
                raise LaunchError(f"{spec.kind} {process_id} exited while starting; log: "
                                  f"{self.log_path(spec)}\n{self.log_tail(spec)}")
            if http_get_json(f"{spec.url}/health")[0] == 200:
                return
            time.sleep(0.1)
        raise LaunchError(f"{process_id} did not answer /health within {timeout:.0f}s; "
                          f"log: {self.log_path(spec)}")

    def dead(self) -> list[str]:
        """Processes that exited without being stopped on purpose."""
        return [pid for pid, proc in self.procs.items()
                if proc.poll() is not None and pid not in self.stopped]

    # -- stop ------------------------------------------------------------------------------

    def primaries(self) -> set[str]:
        """The nodes the map names primary now (empty when no coordinator answers)."""
        for c in self.plan.coordinators:
            status, cmap = http_get_json(f"{c.url}/v1/map")
            if status == 200 and isinstance(cmap, dict):
                return {s.get("primary") for s in (cmap.get("shards") or {}).values()
                        if s.get("primary")}
        return set()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM everything, wait up to ``grace`` seconds, SIGKILL the rest, reap all, and
        return once the cluster's ports can be bound again."""
        # Nodes first: they flush their stores while the coordinators still answer them.
        # Replicas before primaries: a stopping primary tries to hand its role to a replica
        # (docs/rolling-restarts.md); with its replicas gone it learns at once that none is
        # eligible, instead of handing off to a member that is itself stopping.
        primaries = self.primaries()
        waves = [[s for s in self.plan.nodes if s.id not in primaries],
                 [s for s in self.plan.nodes if s.id in primaries], self.plan.coordinators]
        for wave in waves:
            stop_children([self.procs[s.id] for s in wave if s.id in self.procs], grace)
        self.cluster_file.unlink(missing_ok=True)
        wait_ports_free([p for s in self.plan.processes
                         for p in (s.port, s.raft_port) if p is not None])
