"""A chaos run's cluster on containers: every coordinator and node in a container of its own,
on a Docker network of its own, each at a fixed address (``shardkv chaos run --docker``).

Why containers at all, when local processes already run every scenario: a container is a
host of its own in the ways that matter to faults. It has its own network stack (a partition
is a real cut between addresses, made with ``docker network disconnect`` or with iptables in
the container's network namespace, not a cgroup match on the loopback), its own filesystem
and the image's restrictions (read-only root, no capabilities, a non-root user: what the Helm
chart runs). What a scenario finds there, it finds on the artefact users deploy.

How it is laid out, and why:

- **Fixed addresses.** The network gets a /24 of its own and every member a fixed address in
  it (``docker run --ip``): a container that is killed and started again, or disconnected and
  reconnected, comes back at the same address, so the URL it registered in the map and the
  Raft peer address stay true. Nodes listen on every address and advertise
  ``http://<ip>:7100`` (``SHARDKV_ADVERTISE_URL``).
- **The host is the client.** On Linux the host reaches a bridge network's addresses
  directly, so the workload clients, the health checks and the final reads run on the host as
  in local mode, and the history is recorded in one place. Faults between members never touch
  the host's own traffic (it arrives from the gateway address, which no rule names).
- **Data on the host.** Each member's ``/data`` is a host directory (owned by the image's
  user), so the WAL-damage fault flips bits in a stopped node's files exactly as in local
  mode, and the data outlives ``docker rm``.
- **A process handle per container.** :class:`ContainerProcess` answers what the launcher
  asks of a ``Popen`` (pid, poll, kill, wait, send_signal) through the docker CLI, so the
  launcher's start order, readiness, restart and stop logic serve both modes unchanged. The
  pid is the host's view of the container's first process: ``kill`` and ``pause`` signal it
  exactly as they signal a local process, and ``nsenter`` finds its network namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardkv.cluster.cluster_token import CLUSTER_TOKEN_ENV
from shardkv.cluster.launcher import ClusterPlan, LaunchError, LocalCluster, ProcessSpec

DEFAULT_IMAGE = os.environ.get("SHARDKV_IMAGE", "shardkv:dev")
IMAGE_UID = 10001  # the Dockerfile's fixed uid/gid: owns the host directories mounted at /data
NODE_PORT = 7100
COORDINATOR_PORT = 7000
RAFT_PORT = 7001
LABEL = "io.shardkv.chaos-run"
SUBNET_TRIES = 16
# What the Helm chart's securityContext asks of every pod (helm/shardkv/values.yaml).
POD_LIKE_FLAGS = ("--read-only", "--tmpfs", "/tmp:rw,size=16m", "--cap-drop", "ALL",
                  "--security-opt", "no-new-privileges")


def docker(*args: str, check: bool = True, timeout: float = 60.0) -> str:
    """Run the docker CLI; returns stdout. LaunchError (with docker's message) on failure."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"docker {' '.join(args[:2])}: {exc}") from exc
    if check and done.returncode != 0:
        raise LaunchError(f"docker {' '.join(args[:3])} failed ({done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout.strip()


def docker_available(image: str) -> tuple[bool, str]:
    """Whether a containerised run can start here: the CLI, a daemon, the image, root."""
    if shutil.which("docker") is None:
        return False, "the docker CLI is not installed"
    try:
        docker("version", "--format", "{{.Server.Version}}", timeout=15)
    except LaunchError as exc:
        return False, f"the Docker engine does not answer: {exc}"
    try:
        docker("image", "inspect", "--format", "{{.Id}}", image, timeout=15)
    except LaunchError:
        return False, (f"no local image {image}; build it with scripts/build-image.sh "
                       f"(no registry is needed)")
    if os.geteuid() != 0:
        return False, "needs root (the data directories are owned by the image's user)"
    return True, "ok"


def give_to_image_user(directory: Path) -> None:
    """Make ``directory`` and everything in it the image user's: the host writes there too
    (the WAL-damage fault copies a stopped node's files aside and rewrites them as root), and
    a node that cannot open its own files would fail for a reason no user could meet."""
    os.chown(directory, IMAGE_UID, IMAGE_UID)
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.chown(os.path.join(root, name), IMAGE_UID, IMAGE_UID, follow_symlinks=False)


@dataclass
class ContainerSpec(ProcessSpec):
    """A process of the plan that runs in a container at a fixed address."""

    ip: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


@dataclass
class ContainerPlan(ClusterPlan):
    """The launcher's plan with container addresses and the image's command lines."""

    subnet: str = ""

    @classmethod
    def for_subnet(cls, directory: Path, subnet: str, *, shards: int, replicas: int,
                   coordinators: int, engine: str = "memory",
                   fsync: str = "always") -> ContainerPlan:
        local = ClusterPlan.new(directory, shards=shards, replicas=replicas,
                                coordinators=coordinators, engine=engine, fsync=fsync)
        hosts = list(ipaddress.ip_network(subnet).hosts())
        # .1 is the gateway (the host); members from .10 on, coordinators first.
        plan = cls(shards=shards, replicas=replicas, engine=engine, fsync=fsync, subnet=subnet)
        for i, c in enumerate(local.coordinators):
            plan.coordinators.append(ContainerSpec(
                "coordinator", c.id, COORDINATOR_PORT, c.data_dir, raft_port=RAFT_PORT,
                ip=str(hosts[9 + i])))
        for i, n in enumerate(local.nodes):
            plan.nodes.append(ContainerSpec("node", n.id, NODE_PORT, n.data_dir, shard=n.shard,
                                            ip=str(hosts[9 + len(local.coordinators) + i])))
        return plan

    def ip_of(self, process_id: str) -> str:
        for spec in self.processes:
            if spec.id == process_id:
                return spec.ip  # type: ignore[attr-defined]
        raise KeyError(process_id)

    def argv(self, spec: ProcessSpec) -> list[str]:
        """The image's arguments (its entry point is ``shardkv``)."""
        ip = self.ip_of(spec.id)
        if spec.kind == "coordinator":
            others = [c for c in self.coordinators if c.id != spec.id]
            argv = ["coordinator", "--id", spec.id, "--listen", f"0.0.0.0:{spec.port}",
                    "--raft", f"{ip}:{spec.raft_port}", "--advertise-url", spec.url,
                    "--data-dir", "/data", "--init-shards", str(self.shards),
                    "--replication-factor", str(self.replicas)]
            if others:
                argv += ["--peers", ",".join(f"{c.id}={self.ip_of(c.id)}:{c.raft_port}"
                                             for c in others),
                         "--peer-urls", ",".join(f"{c.id}={c.url}" for c in others)]
            return argv
        return ["node", "--id", spec.id, "--data-dir", "/data", "--listen",
                f"0.0.0.0:{spec.port}", "--coordinator", ",".join(self.coordinator_urls()),
                "--shard", spec.shard or "", "--engine", self.engine, "--fsync", self.fsync]


class ContainerProcess:
    """What the launcher asks of a ``Popen``, for one container."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = self._inspect()[1]
        self.returncode: int | None = None

    def _inspect(self) -> tuple[bool, int, int]:
        """(running, host pid, exit code); a container that is gone counts as exited."""
        out = docker("inspect", "--format", "{{.State.Running}} {{.State.Pid}} "
                     "{{.State.ExitCode}}", self.name, check=False, timeout=15)
        parts = out.split()
        if len(parts) != 3:
            return False, 0, -1
        return parts[0] == "true", int(parts[1]), int(parts[2])

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        running, _, code = self._inspect()
        if not running:
            self.returncode = code
        return self.returncode

    def send_signal(self, sig: int) -> None:
        docker("kill", "--signal", signal.Signals(sig).name, self.name, check=False)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.name, timeout or 0)
            time.sleep(0.05)
        return code


class ContainerCluster(LocalCluster):
    """The launcher, with containers for processes. ``run_id`` names the network and the
    containers (``skv-<run>-<member>``) and labels them, so a leftover run can be found with
    ``docker ps -a --filter label=io.shardkv.chaos-run``."""

    def __init__(self, directory: Path, *, run_id: str, image: str, shards: int,
                 replicas: int, coordinators: int, engine: str = "memory",
                 fsync: str = "always", seed: int = 0) -> None:
        self.run_id = run_id
        self.image = image
        self.network = f"skv-chaos-{run_id}"
        self._rng = random.Random(f"subnet/{seed}/{run_id}")
        self._network_created = False
        # The plan needs the subnet, which is only known once the network exists.
        subnet = self._create_network()
        plan = ContainerPlan.for_subnet(directory, subnet, shards=shards, replicas=replicas,
                                        coordinators=coordinators, engine=engine, fsync=fsync)
        super().__init__(directory, plan)
        self.plan: ContainerPlan = plan
        self.raft_password = os.urandom(16).hex()
        # Containers listen on a network address: they need the cluster credential. The
        # harness in this process uses it too (digests, failpoints), through the environment.
        os.environ.setdefault(CLUSTER_TOKEN_ENV, os.urandom(24).hex())

    # -- the network -----------------------------------------------------------------------

    def _create_network(self) -> str:
        """A bridge network on a /24 nobody uses (Docker refuses an overlapping one)."""
        last = ""
        for _ in range(SUBNET_TRIES):
            subnet = f"10.{self._rng.randrange(100, 250)}.{self._rng.randrange(0, 256)}.0/24"
            try:
                docker("network", "create", "--driver", "bridge", "--subnet", subnet,
                       "--label", f"{LABEL}={self.run_id}", self.network)
            except LaunchError as exc:
                last = str(exc)
                continue
            self._network_created = True
            return subnet
        raise LaunchError(f"could not create a Docker network in {SUBNET_TRIES} tries: {last}")

    def container_of(self, process_id: str) -> str:
        return f"skv-{self.run_id}-{process_id}"

    # -- the launcher's hooks --------------------------------------------------------------

    def prepare(self) -> None:
        """Nothing to check: every member has an address of its own."""

    def start_process(self, spec: ProcessSpec) -> ContainerProcess:  # type: ignore[override]
        """``docker run`` the first time, ``docker start`` after (same container: same
        address, same mounts, same command line)."""
        name = self.container_of(spec.id)
        data = Path(spec.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        give_to_image_user(data)
        exists = docker("ps", "-aq", "--filter", f"name=^{name}$", check=False)
        if exists:
            docker("start", name)
        else:
            env = {k: v for k, v in os.environ.items() if k.startswith("SHARDKV_")
                   and k not in ("SHARDKV_IMAGE", "SHARDKV_BASE_IMAGE")}
            env["SHARDKV_LOG_FORMAT"] = env.get("SHARDKV_LOG_FORMAT", "json")
            env["SHARDKV_RAFT_PASSWORD"] = self.raft_password
            if spec.kind == "node":
                env["SHARDKV_ADVERTISE_URL"] = spec.url
            env_flags = [flag for k, v in sorted(env.items()) for flag in ("-e", f"{k}={v}")]
            docker("run", "--detach", "--name", name, "--hostname", spec.id,
                   "--network", self.network, "--ip", self.plan.ip_of(spec.id),
                   "--label", f"{LABEL}={self.run_id}", "--stop-timeout", "10",
                   "--volume", f"{data.resolve()}:/data", *POD_LIKE_FLAGS, *env_flags,
                   self.image, *self.plan.argv(spec))
        proc = ContainerProcess(name)
        self.procs[spec.id] = proc  # type: ignore[assignment]
        return proc  # type: ignore[return-value]

    def log_tail(self, spec: ProcessSpec, lines: int = 8) -> str:
        return docker("logs", "--tail", str(lines), self.container_of(spec.id),
                      check=False, timeout=15)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every container (the launcher's order), keep their logs in
        ``DIR/logs``, then remove the containers and the network."""
        try:
            super().stop(grace)
        finally:
            self.remove()

    def remove(self) -> None:
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for spec in self.plan.processes:
            name = self.container_of(spec.id)
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                with (logs / f"{spec.id}.log").open("wb") as out:
                    subprocess.run(["docker", "logs", name], stdout=out,
                                   stderr=subprocess.STDOUT, timeout=30, check=False)
            docker("rm", "--force", "--volumes", name, check=False)
        if self._network_created:
            docker("network", "rm", self.network, check=False)
            self._network_created = False

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["docker"] = {"image": self.image, "network": self.network,
                         "subnet": self.plan.subnet,
                         "containers": {s.id: self.container_of(s.id)
                                        for s in self.plan.processes}}
        return out
