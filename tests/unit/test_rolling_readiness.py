"""Readiness that means caught up (node/replication/readiness.py) and how `shardkv status`
shows a replica that is still catching up (client/cluster_status.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from shardkv.client.cluster_status import render_status
from shardkv.node.config import NodeConfig
from shardkv.node.replication.readiness import catch_up_state


class FakeReplica:
    def __init__(self, **stats: Any) -> None:
        self._stats = {"connected": True, "lag_entries": 0, "staleness_ms": 5.0, **stats}

    def stats(self) -> dict[str, Any]:
        return dict(self._stats)


def server(role: str, replica: FakeReplica | None, **config: Any) -> Any:
    return SimpleNamespace(ctx=SimpleNamespace(role=role),
                           replication=SimpleNamespace(replica=replica),
                           config=NodeConfig(data_dir="/tmp/x", **config))  # type: ignore[arg-type]


def test_other_roles_are_not_gated() -> None:
    assert catch_up_state(server("primary", None)) is None
    assert catch_up_state(server("joining", None)) is None


def test_a_replica_in_step_is_caught_up() -> None:
    state = catch_up_state(server("replica", FakeReplica(lag_entries=3)))
    assert state == {"caught_up": True, "lag_entries": 3, "staleness_ms": 5.0,
                     "summary": "caught up"}


@pytest.mark.parametrize(("stats", "summary"), [
    ({"lag_entries": 5000}, "catching up (5000 entries behind)"),
    ({"lag_entries": 10, "staleness_ms": 9000.0}, "catching up (10 entries behind)"),
    ({"lag_entries": 0, "staleness_ms": None}, "catching up (0 entries behind)"),
    ({"connected": False, "lag_entries": 7},
     "catching up (not connected to the primary, 7 entries behind)"),
])
def test_a_replica_behind_is_not_ready(stats: dict[str, Any], summary: str) -> None:
    state = catch_up_state(server("replica", FakeReplica(**stats)))
    assert state is not None and state["caught_up"] is False
    assert state["summary"] == summary


def test_bounds_come_from_the_config() -> None:
    behind = FakeReplica(lag_entries=50, staleness_ms=300.0)
    assert catch_up_state(server("replica", behind))["caught_up"] is True  # type: ignore[index]
    strict = server("replica", behind, ready_max_lag_entries=10)
    assert catch_up_state(strict)["caught_up"] is False  # type: ignore[index]
    strict = server("replica", behind, ready_max_staleness_ms=100.0)
    assert catch_up_state(strict)["caught_up"] is False  # type: ignore[index]


def test_a_replica_not_following_yet_is_not_ready() -> None:
    state = catch_up_state(server("replica", None))
    assert state is not None and state["caught_up"] is False


def test_status_shows_catching_up() -> None:
    member = {"id": "n2", "url": "http://x", "role": "replica", "status": "up",
              "health": "ok", "lsn": 10, "epoch": 2, "actual_role": "replica", "lag": 40,
              "sync": "catching up (40 entries behind)"}
    caught = {**member, "id": "n3", "lag": 0, "sync": "caught up"}
    text = render_status({"mode": "cluster", "map_version": 3, "ring_version": 1,
                          "leader": "c1", "healthy": True, "degraded": [],
                          "shards": [{"shard": "s1", "members": [member, caught]}]})
    lines = text.splitlines()
    assert "catching up (40 entries behind)" in next(x for x in lines if " n2 " in x)
    assert "catching up" not in next(x for x in lines if " n3 " in x)
