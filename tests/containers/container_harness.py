"""Helpers for the container tests: plain HTTP, waiting on a condition with a deadline, a
handle on a running container, and shardkv processes started the way the Helm chart starts
its pods (the chart's own scripts, the pods' security restrictions, names resolved by DNS on a
user-defined network). Imported by conftest.py and the test modules of this folder."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HELM_FILES = REPO / "helm" / "shardkv" / "files"
# The chart's scripts (coordinator-start.sh, helm-test.py), mounted where its pods have them.
SCRIPTS_VOLUME = {str(HELM_FILES): {"bind": "/scripts", "mode": "ro"}}
NODE_PORT = 7100
COORDINATOR_PORT = 7000
RAFT_PORT = 7001
RAFT_PASSWORD = "container-test-raft-password"
CLUSTER_TOKEN = "container-test-cluster-token-0123456789"

# What the chart's securityContext asks of every container.
POD_LIKE: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,size=16m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 5.0) -> HttpAnswer:
    """One HTTP request; error statuses are answers, not exceptions (connection errors are)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpAnswer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as err:
        return HttpAnswer(err.code, dict(err.headers), err.read())


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str,
               interval: float = 0.25) -> Any:
    """Poll ``condition`` until it returns a truthy value (which is returned) or the deadline
    passes (AssertionError naming ``what`` and the last exception, if any)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except (OSError, ValueError) as exc:  # connection refused/reset, bad JSON mid-start
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


def wait_http_ok(url: str, *, timeout: float = 60.0) -> HttpAnswer:
    def ok() -> HttpAnswer | None:
        answer = http("GET", url, timeout=2.0)
        return answer if answer.status == 200 else None
    return wait_until(ok, timeout=timeout, what=f"200 from {url}")


@dataclass
class RunningContainer:
    """A started container: the testcontainers object and where its ports are published."""

    container: Any  # testcontainers DockerContainer

    @property
    def raw(self) -> Any:
        """The docker SDK container (inspect, exec, stop/start)."""
        return self.container.get_wrapped_container()

    def url(self, port: int) -> str:
        self.raw.reload()
        bindings = self.raw.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
        if not bindings:
            raise AssertionError(f"port {port} is not published")
        return f"http://127.0.0.1:{bindings[0]['HostPort']}"

    def logs(self) -> str:
        return self.raw.logs().decode(errors="replace")



def launch_container(image: str, command: list[str], started: list[RunningContainer], *,
                     ports: tuple[int, ...] = (7100,), env: dict[str, str] | None = None,
                     network: Any = None, aliases: tuple[str, ...] = (),
                     **docker_kwargs: Any) -> RunningContainer:
    """Start ``image`` with ``command``; it is appended to ``started`` before it starts, so
    that whoever owns the list removes it even when the start fails half-way."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image).with_command(command)
    # Published on 127.0.0.1 only (a random free port): nothing here is for other
    # machines. (with_bind_ports cannot name the host address.)
    for port in ports:
        container.ports[f"{port}/tcp"] = ("127.0.0.1", None)
    for key, value in (env or {}).items():
        container = container.with_env(key, value)
    if network is not None:
        container = container.with_network(network).with_network_aliases(*aliases)
    for path, options in docker_kwargs.pop("tmpfs", {}).items():
        container = container.with_tmpfs_mount(path, options)  # passed to Docker as is
    for host_path, mount in docker_kwargs.pop("volumes", {}).items():
        container = container.with_volume_mapping(host_path, mount["bind"], mount["mode"])
    if docker_kwargs:
        container = container.with_kwargs(**docker_kwargs)
    running = RunningContainer(container)
    started.append(running)
    container.start()
    return running


def remove_containers(started: list[RunningContainer], *, print_logs: bool) -> None:
    """Remove the containers (newest first) with their anonymous volumes; with
    ``print_logs`` (a failed test) their logs go to stderr first."""
    for running in reversed(started):
        if print_logs and running.container._container is not None:
            sys.stderr.write(f"--- logs of {running.raw.name} ---\n{running.logs()}\n")
        running.container.stop(force=True, delete_volume=True)


def start_coordinator_group(start_container: Callable[..., RunningContainer], network: Any,
                            count: int, suffix: str, *, shards: int = 1,
                            replication_factor: int = 1, env: dict[str, str] | None = None,
                            ) -> tuple[list[str], list[RunningContainer]]:
    """``count`` coordinators started as the chart starts its pods: the chart's
    coordinator-start.sh derives id, Raft address and peers from the pod name and the member
    list; the names (``coord<i>-<suffix>``) resolve through the network's DNS as pod names do
    through the headless Service. ``env`` adds to their environment (Raft timings, the
    failover timeout). Returns the names and the containers, once all are ready."""
    names = [f"coord{i}-{suffix}" for i in range(count)]
    env = {
        "SHARDKV_COORDINATOR_MEMBERS": ",".join(f"{name}={name}" for name in names),
        "SHARDKV_RAFT_PASSWORD": RAFT_PASSWORD,
        "SHARDKV_CLUSTER_TOKEN": CLUSTER_TOKEN,
        "SHARDKV_HTTP_PORT": str(COORDINATOR_PORT),
        "SHARDKV_RAFT_PORT": str(RAFT_PORT),
        "SHARDKV_HEALTH_URL": f"http://127.0.0.1:{COORDINATOR_PORT}/health",
        **(env or {}),
    }
    coordinators = [
        start_container(
            [f"--init-shards={shards}", f"--replication-factor={replication_factor}",
             "--commit-timeout=5"],
            ports=(COORDINATOR_PORT,), network=network, aliases=(name,), hostname=name,
            env={**env, "POD_NAME": name}, volumes=SCRIPTS_VOLUME,
            entrypoint=["/bin/sh", "/scripts/coordinator-start.sh"], **POD_LIKE)
        for name in names
    ]
    for coordinator in coordinators:
        wait_http_ok(f"{coordinator.url(COORDINATOR_PORT)}/ready", timeout=90)
    return names, coordinators


def start_node(start_container: Callable[..., RunningContainer], network: Any, name: str,
               coordinator_urls: str, shard: str, *, engine: str = "sqlite",
               env: dict[str, str] | None = None, advertise: bool = False,
               ) -> RunningContainer:
    """A storage node of ``shard``, found on the network as ``name``.

    By default it listens on its own address there (``name`` resolves to it), so the URL it
    registers is one the other containers can reach, as the chart's nodes listen on their pod
    IP. With ``advertise`` it listens on every address and registers ``http://<name>:7100``
    through ``SHARDKV_ADVERTISE_URL`` instead: a container reconnected to the network may get
    a new address, and a socket bound to the old one would never be reached again."""
    listen = f"0.0.0.0:{NODE_PORT}" if advertise else f"{name}:{NODE_PORT}"
    node_env = {"SHARDKV_CLUSTER_TOKEN": CLUSTER_TOKEN,
                "SHARDKV_HEALTH_URL": f"http://127.0.0.1:{NODE_PORT}/health" if advertise
                else f"http://{name}:{NODE_PORT}/health", **(env or {})}
    if advertise:
        node_env["SHARDKV_ADVERTISE_URL"] = f"http://{name}:{NODE_PORT}"
    return start_container(
        ["node", "--data-dir", "/data", "--listen", listen,
         "--coordinator", coordinator_urls, "--shard", shard, "--id", name,
         "--engine", engine],
        network=network, aliases=(name,), hostname=name, env=node_env, **POD_LIKE)
