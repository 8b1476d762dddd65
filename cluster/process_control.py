"""Stopping one process of a local cluster gracefully and starting it again.

Two owners of processes implement ``rolling_restart.ProcessControl``:

- ``OwnedProcesses``: a ``LocalCluster`` in this process (tests, benchmarks), which holds
  the ``Popen`` objects;
- ``LauncherProcesses``: a cluster run by a launcher in another process
  (``shardkv up [--detach]``). The launcher owns its children (it supervises them and keeps
  ``cluster.json``), so this asks it, through the same request folder as
  ``shardkv node stop|start`` (``cluster/launcher_control.py``), instead of signalling pids
  itself: supervision never fights a rolling restart.

Both stop with SIGTERM and wait (a primary hands its role over first, a coordinator leader
its Raft leadership); SIGKILL only after the grace period.
"""

from __future__ import annotations

from pathlib import Path

from shardkv.cluster.launcher import ClusterPlan, LaunchError, LocalCluster
from shardkv.cluster.launcher_control import ControlError, launcher_pid, request


class OwnedProcesses:
    """``ProcessControl`` over a ``LocalCluster`` owned by this process."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def url_of(self, process_id: str) -> str:
        return self.cluster.spec(process_id).url

    def coordinator_ids(self) -> list[str]:
        return [c.id for c in self.cluster.plan.coordinators]

    def stop_gracefully(self, process_id: str, timeout: float) -> int | None:
        return self.cluster.stop_one(process_id, grace=timeout)

    def start_again(self, process_id: str) -> None:
        self.cluster.restart(process_id)


class LauncherProcesses:
    """``ProcessControl`` over the cluster a launcher runs in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        plan_file = directory / "launcher.json"
        if not plan_file.is_file() or launcher_pid(directory) is None:
            raise LaunchError(f"no cluster launcher runs in {directory} (start one with "
                              f"`shardkv up --dir {directory} --detach`)")
        self.plan = ClusterPlan.load(plan_file)

    def _spec_url(self, process_id: str) -> str:
        for spec in self.plan.processes:
            if spec.id == process_id:
                return spec.url
        raise LaunchError(f"no process {process_id!r} in {self.directory}")

    def url_of(self, process_id: str) -> str:
        return self._spec_url(process_id)

    def coordinator_ids(self) -> list[str]:
        return [c.id for c in self.plan.coordinators]

    def _ask(self, action: str, process_id: str) -> dict[str, object]:
        try:
            reply = request(self.directory, action, process_id)
        except ControlError as exc:
            raise LaunchError(str(exc)) from None
        if not reply.get("ok"):
            raise LaunchError(f"{action} {process_id}: {reply.get('message')}")
        return reply

    def stop_gracefully(self, process_id: str, timeout: float) -> int | None:
        # The launcher applies its own grace period (SIGTERM, then SIGKILL after 10 s).
        self._ask("stop", process_id)
        return None  # the exit status is in the launcher's answer text, not returned

    def start_again(self, process_id: str) -> None:
        self._ask("start", process_id)
