"""The replicated state machine: placement, primaries and epochs, drains, the ring, and
refusal of bad commands without any change."""

from __future__ import annotations

from typing import Any

import pytest
from shardkv.coordinator.state_machine import MapStateMachine


def ok(machine: MapStateMachine, **command: Any) -> dict[str, Any]:
    result = machine.apply(command)
    assert "error" not in result, result
    return result


def refused(machine: MapStateMachine, code: str, **command: Any) -> dict[str, Any]:
    version = machine.current.version
    before = machine.snapshot()
    result = machine.apply(command)
    assert result.get("error") == code, result
    assert machine.current.version == version
    assert machine.snapshot()["map"] == before["map"]
    return result


def booted(shards: int = 2, rf: int = 3) -> MapStateMachine:
    m = MapStateMachine()
    ok(m, op="bootstrap", shards=shards, replication_factor=rf)
    return m


def register(m: MapStateMachine, port: int, **extra: Any) -> dict[str, Any]:
    return ok(m, op="register_node", url=f"http://127.0.0.1:{port}", **extra)


def test_bootstrap_creates_shards_and_ring_and_is_idempotent() -> None:
    m = booted(3, 2)
    assert sorted(m.current.shards) == ["s1", "s2", "s3"]
    assert m.current.ring.version == 1 and m.current.ring.shards == {"s1": 1, "s2": 1, "s3": 1}
    version = m.current.version
    assert ok(m, op="bootstrap", shards=3, replication_factor=2).get("already")
    assert m.current.version == version
    refused(m, "VERSION_MISMATCH", op="bootstrap", shards=4, replication_factor=2)


def test_every_shard_gets_a_primary_before_any_gets_a_replica() -> None:
    m = booted(2, 3)
    placed = [register(m, 9000 + i) for i in range(7)]
    assert [(p["node_id"], p["shard"], p["role"]) for p in placed] == [
        ("n1", "s1", "primary"),
        ("n2", "s2", "primary"),
        ("n3", "s1", "replica"),
        ("n4", "s2", "replica"),
        ("n5", "s1", "replica"),
        ("n6", "s2", "replica"),
        ("n7", None, "none"),  # every replica set is full: a spare
    ]
    s1 = m.current.shards["s1"]
    assert s1.primary == "n1" and s1.members == ["n1", "n3", "n5"] and s1.epoch == 1


def test_members_spread_across_zones_then_hosts() -> None:
    m = booted(2, 2)
    register(m, 1, labels={"zone": "a"})  # n1 -> s1 (emptiest, first)
    register(m, 2, labels={"zone": "b"})  # n2 -> s2
    # Both shards have one member; s1 already holds zone a, so a zone-a node goes to s2.
    assert register(m, 3, labels={"zone": "a"})["shard"] == "s2"
    hosts = booted(2, 2)
    register(hosts, 1, labels={"host": "h1"})
    register(hosts, 2, labels={"host": "h2"})
    assert register(hosts, 3, labels={"host": "h2"})["shard"] == "s1"


def test_named_shard_and_restarted_node_keeps_its_place() -> None:
    m = booted(2, 2)
    joined = register(m, 1, shard="s2")
    assert joined["shard"] == "s2" and joined["role"] == "primary"
    register(m, 2)
    again = register(m, 1, node_id=joined["node_id"], labels={"host": "h1"})
    assert again["shard"] == "s2" and again["role"] == "primary" and again["node_id"] == "n1"
    assert m.current.nodes["n1"].labels == {"host": "h1"}
    refused(m, "NOT_FOUND", op="register_node", url="http://x:1", shard="s9")
    refused(m, "INVALID_ARGUMENT", op="register_node", url="http://x:1", node_id="n1",
            shard="s1")


def test_a_retried_registration_with_the_same_token_gets_the_same_id() -> None:
    m = booted(1, 3)
    first = register(m, 1, token="token-0001")
    second = register(m, 1, token="token-0001")
    assert first["node_id"] == second["node_id"] == "n1"
    assert len(m.current.nodes) == 1
    assert register(m, 2, token="token-0002")["node_id"] == "n2"


def test_set_primary_raises_the_epoch_and_fences_stale_callers() -> None:
    m = booted(1, 3)
    for port in (1, 2, 3):
        register(m, port)
    shard = m.current.shards["s1"]
    assert (shard.primary, shard.epoch) == ("n1", 1)
    result = ok(m, op="set_primary", shard="s1", node="n2", epoch=2)
    assert result["epoch"] == 2
    assert m.current.nodes["n2"].role == "primary" and m.current.nodes["n1"].role == "replica"
    stale = refused(m, "STALE_EPOCH", op="set_primary", shard="s1", node="n3", epoch=2)
    assert stale["epoch"] == 2 and stale["primary"] == "n2"
    assert ok(m, op="set_primary", shard="s1", node="n3")["epoch"] == 3
    refused(m, "INVALID_ARGUMENT", op="set_primary", shard="s1", node="n9")
    refused(m, "NOT_FOUND", op="set_primary", shard="s7", node="n1")


def test_drain_hands_over_the_primary_and_a_spare_fills_the_hole() -> None:
    m = booted(1, 2)
    for port in (1, 2, 3):
        register(m, port)  # n1 primary, n2 replica, n3 spare
    ok(m, op="drain_node", node="n1")
    shard = m.current.shards["s1"]
    assert shard.primary == "n2" and shard.epoch == 2
    assert shard.members == ["n2", "n3"]
    assert m.current.nodes["n1"].status == "draining" and m.current.nodes["n1"].shard is None
    assert m.current.nodes["n3"].role == "replica"
    assert register(m, 1, node_id="n1")["shard"] is None  # a drained node stays out
    ok(m, op="remove_node", node="n3")
    back = ok(m, op="set_node_status", node="n1", status="up")
    assert back["shard"] == "s1" and m.current.shards["s1"].members == ["n2", "n1"]
    ok(m, op="remove_node", node="n1")
    assert "n1" not in m.current.nodes
    refused(m, "NOT_FOUND", op="remove_node", node="n1")


def test_add_shard_and_set_ring() -> None:
    m = booted(2, 1)
    added = ok(m, op="add_shard")
    assert added["shard"] == "s3" and added["ring_version"] == 2
    parked = ok(m, op="add_shard", shard="s4", in_ring=False)
    assert parked["ring_version"] == 2 and "s4" not in m.current.ring.shards
    refused(m, "VERSION_MISMATCH", op="add_shard", shard="s4")
    refused(m, "VERSION_MISMATCH", op="set_ring", shards={"s1": 1}, expected_version=1)
    flipped = ok(m, op="set_ring", shards={"s1": 1, "s2": 1, "s3": 1, "s4": 2},
                 expected_version=2)
    assert flipped["ring_version"] == 3
    refused(m, "NOT_FOUND", op="set_ring", shards={"nope": 1})


@pytest.mark.parametrize(
    "command",
    [
        {"op": "bootstrap", "shards": 0},
        {"op": "bootstrap", "shards": "2"},
        {"op": "bootstrap", "shards": 2, "hash": "crc7"},
        {"op": "register_node", "url": "not a url"},
        {"op": "register_node", "url": "http://x:1", "labels": ["zone"]},
        {"op": "register_node", "url": "http://x:1", "token": "short"},
        {"op": "set_node_status", "node": "n1", "status": "sleepy"},
        {"op": "drain_node", "node": "bad id with spaces"},
        {"op": "add_shard", "weight": 0},
        {"op": "set_ring", "shards": {}},
        {"op": "nonsense"},
        {"no_op_field": 1},
    ],
)
def test_bad_commands_change_nothing(command: dict[str, Any]) -> None:
    m = booted(2, 2)
    register(m, 1)
    version, before = m.current.version, m.snapshot()
    result = m.apply(command)
    assert result["error"] in {"INVALID_ARGUMENT", "UNKNOWN_OP", "NOT_FOUND"}, result
    assert m.current.version == version and m.snapshot()["map"] == before["map"]


def test_replicas_applying_the_same_log_agree_and_snapshots_restore() -> None:
    log: list[dict[str, Any]] = [
        {"op": "register_coordinator", "id": "c1", "url": "http://127.0.0.1:7000"},
        {"op": "bootstrap", "shards": 3, "replication_factor": 2},
        *({"op": "register_node", "url": f"http://h{i}:1", "labels": {"zone": f"z{i % 2}"}}
          for i in range(8)),
        {"op": "drain_node", "node": "n2"},
        {"op": "set_primary", "shard": "s3", "node": "n6"},
        {"op": "add_shard"},
        {"op": "remove_node", "node": "n5"},
    ]
    a, b = MapStateMachine(), MapStateMachine()
    results_a = [a.apply(c) for c in log]
    results_b = [b.apply(c) for c in log]
    assert results_a == results_b
    assert a.snapshot() == b.snapshot()
    c = MapStateMachine()
    c.restore(a.snapshot())
    assert c.snapshot() == a.snapshot()
    nxt = {"op": "register_node", "url": "http://late:1"}
    assert c.apply(nxt) == a.apply(nxt)


def test_a_node_id_belongs_to_the_token_that_first_registered_it() -> None:
    m = booted(1, 3)
    register(m, 9000, node_id="n1", token="a" * 32)
    register(m, 9000, node_id="n1", token="a" * 32)  # the same node again: fine
    before = m.snapshot()
    refused(m, "FORBIDDEN", op="register_node", url="http://10.9.9.9:1", node_id="n1",
            token="b" * 32)
    refused(m, "FORBIDDEN", op="register_node", url="http://10.9.9.9:1", node_id="n1")
    assert m.snapshot()["tokens"] == before["tokens"]
    assert m.current.nodes["n1"].url == "http://127.0.0.1:9000"


def test_a_shard_never_gets_more_members_than_its_replication_factor() -> None:
    m = booted(1, 2)
    register(m, 9000, shard="s1", token="a" * 32)
    register(m, 9001, shard="s1", token="b" * 32)
    result = refused(m, "FORBIDDEN", op="register_node", url="http://127.0.0.1:9002",
                     shard="s1", token="c" * 32)
    assert result["shard"] == "s1" and len(result["members"]) == 2
    assert "c" * 32 not in m.snapshot()["tokens"]
    spare = register(m, 9003, token="d" * 32)  # no shard asked: a spare, not a member
    assert spare["shard"] is None and len(m.current.shards["s1"].members) == 2


def test_only_an_admin_adds_a_member_beyond_the_replication_factor() -> None:
    m = booted(1, 1)
    register(m, 9000, shard="s1", token="a" * 32)
    spare = register(m, 9001, token="b" * 32)
    assert spare["shard"] is None
    result = ok(m, op="add_member", shard="s1", node=spare["node_id"])
    assert result["members"] == ["n1", spare["node_id"]]
    assert m.current.nodes[spare["node_id"]].role == "replica"
    refused(m, "NOT_FOUND", op="add_member", shard="s9", node=spare["node_id"])
