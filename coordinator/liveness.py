"""Node liveness: what the leader knows from heartbeats, kept in memory only.

Heartbeats arrive every second or so from every node; putting them through Raft would turn
the replicated log into a clock. So the leader keeps them here, and only *decisions* drawn
from them (mark a node down, fail a shard over) go through Raft. The table starts empty on a
new leader: every node in the map is then given a grace period (``grace_s``) before it can be
judged, so a leader change never looks like the death of every node.

The failure detector of the replication issue reads :meth:`Liveness.snapshot` (state, last
heartbeat age, reported LSN/epoch/role per node) and decides.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

ALIVE = "alive"
SUSPECT = "suspect"
DEAD = "dead"
UNKNOWN = "unknown"  # still inside the grace period, never heard from
LIVENESS_STATES = (ALIVE, SUSPECT, DEAD, UNKNOWN)


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What a node said in its last heartbeat, and when (monotonic seconds)."""

    node_id: str
    received_at: float
    lsn: int
    epoch: int
    role: str
    map_version: int


class Liveness:
    """Per-node last heartbeat; ``suspect_s``/``dead_s`` are the silences that make a node
    suspect, then dead."""

    def __init__(self, suspect_s: float = 3.0, dead_s: float = 10.0, grace_s: float = 10.0,
                 clock: object = time.monotonic) -> None:
        if not 0 < suspect_s <= dead_s:
            raise ValueError("need 0 < suspect_s <= dead_s")
        self.suspect_s = suspect_s
        self.dead_s = dead_s
        self.grace_s = grace_s
        self._clock = clock
        self._reports: dict[str, NodeReport] = {}
        self._grace_until = 0.0

    def now(self) -> float:
        return self._clock()  # type: ignore[operator]

    def start_term(self) -> None:
        """Called when this coordinator becomes leader: forget, and grant grace to all."""
        self._reports.clear()
        self._grace_until = self.now() + self.grace_s

    def record(self, node_id: str, lsn: int, epoch: int, role: str, map_version: int) -> None:
        self._reports[node_id] = NodeReport(node_id, self.now(), lsn, epoch, role, map_version)

    def forget(self, node_id: str) -> None:
        self._reports.pop(node_id, None)

    def report(self, node_id: str) -> NodeReport | None:
        return self._reports.get(node_id)

    def state(self, node_id: str) -> str:
        now = self.now()
        report = self._reports.get(node_id)
        if report is None:
            return UNKNOWN if now < self._grace_until else DEAD
        if now < self._grace_until:
            return ALIVE
        silence = now - report.received_at
        if silence >= self.dead_s:
            return DEAD
        if silence >= self.suspect_s:
            return SUSPECT
        return ALIVE

    def snapshot(self, node_ids: Iterable[str]) -> dict[str, dict[str, object]]:
        """Per node: state, seconds since the last heartbeat (None if never), lsn, epoch, role."""
        now = self.now()
        out: dict[str, dict[str, object]] = {}
        for node_id in node_ids:
            report = self._reports.get(node_id)
            out[node_id] = {
                "liveness": self.state(node_id),
                "last_heartbeat_age_s": None if report is None
                else round(now - report.received_at, 3),
                "reported_lsn": None if report is None else report.lsn,
                "reported_epoch": None if report is None else report.epoch,
                "reported_role": None if report is None else report.role,
                "reported_map_version": None if report is None else report.map_version,
            }
        return out

    def counts(self, node_ids: Iterable[str]) -> dict[str, int]:
        counts = dict.fromkeys(LIVENESS_STATES, 0)
        for node_id in node_ids:
            counts[self.state(node_id)] += 1
        return counts
