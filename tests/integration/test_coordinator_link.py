"""Nodes (through node/membership/coordinator_link.py) against three real coordinator processes:
registration and placement, the id kept across restarts, heartbeats that follow the leader,
and map changes seen within a second."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.local_processes import free_port
from shardkv.coordinator.local_group import LocalGroup, http_json
from shardkv.node.membership.coordinator_link import CoordinatorLink, Placement

pytestmark = pytest.mark.integration


@pytest.fixture
def group(tmp_path: Path) -> Iterator[LocalGroup]:
    g = LocalGroup(str(tmp_path / "coord"), size=3, init_shards=2, replication_factor=2,
                   env={"SHARDKV_RAFT_PASSWORD": "link-test"})
    g.start_all()
    try:
        yield g
    finally:
        g.stop_all()


class RecordingNode:
    """Stands in for the node server: records every placement the link reports."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, Placement]] = []
        self.changed = asyncio.Event()

    def on_change(self, placement: Placement, _map: ClusterMap) -> None:
        self.changes.append((time.monotonic(), placement))
        self.changed.set()

    async def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> Placement:
        deadline = time.monotonic() + timeout_s
        while True:
            for _, placement in self.changes:
                if predicate(placement):
                    return placement
            remaining = deadline - time.monotonic()
            assert remaining > 0, self.changes
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


def make_link(group: LocalGroup, data_dir: Path, port: int, recorder: RecordingNode,
              **kwargs: Any) -> CoordinatorLink:
    # The first URL answers nothing: the link must move on to the others.
    dead = f"http://127.0.0.1:{free_port()}"
    return CoordinatorLink(
        [dead, *(m.url for m in group.members)], str(data_dir), f"http://127.0.0.1:{port}",
        status=lambda: {"lsn": port, "epoch": 1, "role": "replica"},
        on_change=recorder.on_change, heartbeat_interval_s=0.2, watch_timeout_s=5.0,
        **kwargs,
    )


async def test_nodes_register_get_places_and_keep_them(group: LocalGroup, tmp_path: Path
                                                       ) -> None:
    await group.wait_leader()
    recorders = [RecordingNode() for _ in range(4)]
    links = [make_link(group, tmp_path / f"d{i}", 9300 + i, recorders[i]) for i in range(4)]
    try:
        placements = [await link.start() for link in links]
        assert [(p.node_id, p.shard, p.role) for p in placements] == [
            ("n1", "s1", "primary"), ("n2", "s2", "primary"),
            ("n3", "s1", "replica"), ("n4", "s2", "replica"),
        ]
        assert (tmp_path / "d2" / "node_id").read_text().strip() == "n3"
        # Restart node n3 on the same data directory: same id, same place.
        await links[2].stop()
        links[2] = make_link(group, tmp_path / "d2", 9302, recorders[2])
        again = await links[2].start()
        assert (again.node_id, again.shard, again.role) == ("n3", "s1", "replica")
        # Heartbeats reach the leader.
        leader = await group.wait_leader()
        deadline = time.monotonic() + 5
        while True:
            _, nodes = await asyncio.to_thread(http_json, "GET", f"{leader.url}/admin/nodes")
            if all(n["liveness"] == "alive" for n in nodes["nodes"].values()):
                break
            assert time.monotonic() < deadline, nodes
            await asyncio.sleep(0.1)
        assert nodes["nodes"]["n4"]["reported_lsn"] == 9303
    finally:
        for link in links:
            await link.stop()


async def test_map_changes_reach_nodes_even_after_leader_loss(
    group: LocalGroup, tmp_path: Path
) -> None:
    leader = await group.wait_leader()
    recorders = [RecordingNode() for _ in range(3)]
    links = [make_link(group, tmp_path / f"d{i}", 9400 + i, recorders[i]) for i in range(3)]
    try:
        for link in links:
            await link.start()
        await recorders[0].wait_for(lambda p: p.map_version >= links[2].cluster_map.version)
        # Drain the primary of s1 (n1): n3, its replica, becomes primary with a new epoch.
        status, _ = await asyncio.to_thread(http_json, "POST",
                                            f"{leader.url}/admin/nodes/n1/drain")
        assert status == 200
        promoted = await recorders[2].wait_for(lambda p: p.role == "primary")
        assert (promoted.shard, promoted.epoch) == ("s1", 2)
        drained = await recorders[0].wait_for(lambda p: p.status == "draining")
        assert drained.role == "none"

        # Kill the leader: the links move their watch and heartbeats to the new one.
        leader.signal(signal.SIGKILL)
        leader.wait_exit()
        new_leader = await group.wait_leader(among=[m for m in group.members if m.running])
        # Outside the ring: these links are not real nodes and cannot say whether they hold
        # data, so a ring change would be refused (coordinator/ring_change_guard.py).
        before = links[1].cluster_map.version
        status, _ = await asyncio.to_thread(http_json, "POST", f"{new_leader.url}/admin/shards",
                                            {"in_ring": False})
        assert status == 201
        grown = await recorders[1].wait_for(lambda p: p.map_version > before, timeout_s=10)
        assert grown.map_version > before
        answer = await links[1].heartbeat_once()
        assert answer["leader"] == new_leader.id
    finally:
        for link in links:
            await link.stop()


async def test_a_silent_leader_costs_one_heartbeat_timeout_not_the_lease(
    group: LocalGroup, tmp_path: Path
) -> None:
    """A leader whose host vanished never refuses a connection; the heartbeat must move on to
    the other members after ``heartbeat_timeout_s``, and the lease must run from the attempt
    that was answered (not from the one that hung)."""
    import socket

    await group.wait_leader()
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nobody ever answers
    link = make_link(group, tmp_path / "d", 9400, RecordingNode(), heartbeat_timeout_s=0.3)
    renewals: list[float] = []
    link.on_heartbeat = lambda sent_at, _answer: renewals.append(sent_at)
    try:
        await link.start()
        link.leader_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = link._clock()
        answer = await asyncio.wait_for(link.heartbeat_once(), 3.0)
        assert answer["leader"]
        assert link.leader_url != f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert renewals and renewals[-1] >= started + 0.3  # sent after the silent attempt
    finally:
        await link.stop()
        silent.close()
