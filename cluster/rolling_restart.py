"""A rolling restart of a local cluster: every process once, the cluster serving throughout.

Order (the same a StatefulSet follows with the chart's probes, docs/rolling-restarts.md):

1. For each shard, its **replicas** one at a time: SIGTERM (a replica stops cleanly), wait
   until it has exited, start it again on the same data and port, and wait until its
   ``/ready`` is 200, which for a replica means *caught up* with its primary
   (``node/replication/readiness.py``), before touching the next member. A shard therefore
   never has more than one member down or behind.
2. Then the shard's **primary**: SIGTERM makes it hand its role to its most caught-up replica
   (``node/replication/handoff.py``) before it drains and exits; it comes back as a replica
   and is waited for like one.
3. The **coordinators** one at a time, followers first and the leader last; a stopping
   leader hands Raft leadership over first (``coordinator/leadership_transfer.py``). Each is
   waited for until it is ready and the group has a leader again.

Processes are driven through ``ProcessControl`` (``cluster/process_control.py``): a
``LocalCluster`` (tests, benchmarks) or the launcher of a cluster started by ``shardkv up``
(``shardkv restart --rolling``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shardkv.cluster.launcher import LaunchError, http_get_json

MEMBER_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0  # the node's handoff bound (8 s) and drain (10 s), with room


class ProcessControl(Protocol):
    """What a rolling restart needs from whoever owns the processes."""

    def url_of(self, process_id: str) -> str: ...
    def coordinator_ids(self) -> list[str]: ...
    def stop_gracefully(self, process_id: str, timeout: float) -> int | None: ...
    def start_again(self, process_id: str) -> None: ...


@dataclass
class StepReport:
    process: str
    kind: str  # "replica", "primary" or "coordinator" (or "coordinator leader")
    shard: str | None
    stop_s: float
    ready_s: float
    exit_status: int | None
    new_primary: str | None = None
    began_at: float = 0.0  # on the restart's clock (time.monotonic by default)


@dataclass
class RollingReport:
    steps: list[StepReport] = field(default_factory=list)
    total_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"total_s": round(self.total_s, 3), "steps": [
            {"process": s.process, "kind": s.kind, "shard": s.shard,
             "stop_s": round(s.stop_s, 3), "ready_s": round(s.ready_s, 3),
             "exit_status": s.exit_status, "new_primary": s.new_primary}
            for s in self.steps]}


def _current_map(control: ProcessControl) -> dict[str, Any]:
    for cid in control.coordinator_ids():
        status, cmap = http_get_json(f"{control.url_of(cid)}/v1/map", timeout=2.0)
        if status == 200 and isinstance(cmap, dict):
            return cmap
    raise LaunchError("no coordinator answers /v1/map")


class RollingRestart:
    """See the module docstring. ``run()`` returns a report; ``say`` prints progress."""

    def __init__(self, control: ProcessControl, *, say: Callable[[str], None] = print,
                 ready_timeout_s: float = MEMBER_READY_TIMEOUT_S,
                 stop_timeout_s: float = STOP_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.control = control
        self.say = say
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.clock = clock

    # -- waiting -------------------------------------------------------------------------

    def _await(self, what: str, check: Callable[[], tuple[bool, str]]) -> None:
        deadline = self.clock() + self.ready_timeout_s
        reason = "not checked"
        while self.clock() < deadline:
            ok, reason = check()
            if ok:
                return
            time.sleep(0.1)
        raise LaunchError(f"{what} within {self.ready_timeout_s:.0f}s: {reason}; the rolling "
                          f"restart stopped here (every other member is untouched)")

    def _node_ready(self, node_id: str) -> tuple[bool, str]:
        status, body = http_get_json(f"{self.control.url_of(node_id)}/ready", timeout=1.0)
        if status != 200:
            detail = body.get("status") if isinstance(body, dict) else None
            return False, f"{node_id} /ready {status} ({detail or 'no answer'})"
        cmap = _current_map(self.control)
        node = (cmap.get("nodes") or {}).get(node_id) or {}
        if node.get("status") != "up":
            return False, f"{node_id} is {node.get('status')} in the map"
        return True, "ready"

    def _coordinator_ready(self, cid: str) -> tuple[bool, str]:
        status, _ = http_get_json(f"{self.control.url_of(cid)}/ready", timeout=1.0)
        if status != 200:
            return False, f"coordinator {cid} /ready {status}"
        status, cmap = http_get_json(f"{self.control.url_of(cid)}/v1/map", timeout=1.0)
        if status != 200 or not isinstance(cmap, dict) or not cmap.get("leader"):
            return False, "the coordinator group has no leader yet"
        return True, "ready"

    # -- steps ---------------------------------------------------------------------------

    def _restart(self, process_id: str, kind: str, shard: str | None,
                 ready: Callable[[str], tuple[bool, str]]) -> StepReport:
        self.say(f"  {kind} {process_id}{f' (shard {shard})' if shard else ''}: stopping")
        started = self.clock()
        status = self.control.stop_gracefully(process_id, self.stop_timeout_s)
        stopped = self.clock()
        self.control.start_again(process_id)
        self._await(f"{kind} {process_id} was not ready (caught up) again",
                    lambda: ready(process_id))
        done = self.clock()
        self.say(f"  {kind} {process_id}: stopped in {stopped - started:.2f}s (exit "
                 f"{status}), ready again after {done - stopped:.2f}s")
        return StepReport(process_id, kind, shard, stopped - started, done - stopped, status,
                          began_at=started)

    def run(self) -> RollingReport:
        report = RollingReport()
        started = self.clock()
        cmap = _current_map(self.control)
        for shard_id in sorted(cmap.get("shards") or {}):
            shard = (cmap.get("shards") or {})[shard_id]
            primary = shard.get("primary")
            replicas = [m for m in shard.get("members") or [] if m != primary]
            self.say(f"shard {shard_id}: replicas {', '.join(replicas) or '-'}, then "
                     f"primary {primary or '-'}")
            for node_id in replicas:
                report.steps.append(self._restart(node_id, "replica", shard_id,
                                                  self._node_ready))
            if primary is None:
                continue
            step = self._restart(primary, "primary", shard_id, self._node_ready)
            now = ((_current_map(self.control).get("shards") or {}).get(shard_id) or {})
            step.new_primary = now.get("primary")
            self.say(f"  shard {shard_id}: primary is now {step.new_primary}")
            report.steps.append(step)
        leader = _current_map(self.control).get("leader")
        followers = [c for c in self.control.coordinator_ids() if c != leader]
        ordered = followers + ([leader] if leader in self.control.coordinator_ids() else [])
        self.say(f"coordinators: {', '.join(followers) or '-'}, then leader {leader or '-'}")
        for cid in ordered:
            kind = "coordinator leader" if cid == leader else "coordinator"
            report.steps.append(self._restart(cid, kind, None, self._coordinator_ready))
        report.total_s = self.clock() - started
        self.say(f"rolling restart done in {report.total_s:.1f}s "
                 f"({len(report.steps)} processes)")
        return report
