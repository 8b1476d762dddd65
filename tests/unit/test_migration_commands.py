"""The Raft commands of an online migration: the record, its transitions, the flip and its
epoch check, abort before the flip only, and bad input refused without any change."""

from __future__ import annotations

from typing import Any

from shardkv.coordinator.state_machine import MapStateMachine


def ok(machine: MapStateMachine, **command: Any) -> dict[str, Any]:
    result = machine.apply(command)
    assert "error" not in result, result
    return result


def refused(machine: MapStateMachine, code: str, **command: Any) -> dict[str, Any]:
    before = machine.snapshot()["map"]
    result = machine.apply(command)
    assert result.get("error") == code, result
    assert machine.snapshot()["map"] == before
    return result


def booted() -> MapStateMachine:
    m = MapStateMachine()
    ok(m, op="bootstrap", shards=2, replication_factor=1)
    for port in (9001, 9002):
        ok(m, op="register_node", url=f"http://127.0.0.1:{port}")
    return m


def test_add_records_the_migration_and_flips_only_with_the_fenced_epochs() -> None:
    m = booted()
    ring_before = m.current.ring.to_dict()
    started = ok(m, op="begin_migration", id="m1", kind="add", weight=2, now=10.0)
    assert started["shard"] == "s3"
    record = m.current.migration
    assert record is not None and record.state == "copying" and record.sources == ["s1", "s2"]
    assert record.target_ring == {"s1": 1, "s2": 1, "s3": 2}
    assert m.current.ring.to_dict() == ring_before  # the ring waits for the flip
    assert m.current.shards["s3"].state == "migrating"
    spare = ok(m, op="register_node", url="http://127.0.0.1:9003")
    assert spare["shard"] == "s3" and spare["role"] == "primary"  # spares fill it

    refused(m, "VERSION_MISMATCH", op="begin_migration", id="m2", now=11.0)
    refused(m, "VERSION_MISMATCH", op="set_ring", shards={"s1": 3, "s2": 1})
    refused(m, "VERSION_MISMATCH", op="add_shard", shard="s9")
    refused(m, "VERSION_MISMATCH", op="flip_migration", id="m1", epochs={"s1": 1, "s2": 1})
    refused(m, "VERSION_MISMATCH", op="migration_state", id="m1", state="done")
    ok(m, op="migration_progress", id="m1", keys_moved=5, bytes_moved=50, lsn_floor=1 << 32,
       floor_from={"s3": 0})
    assert m.current.migration is not None and m.current.migration.floor_from == {"s3": 0}
    ok(m, op="migration_state", id="m1", state="flipping", now=12.0)
    epochs = {sid: m.current.shards[sid].epoch for sid in ("s1", "s2")}
    refused(m, "STALE_EPOCH", op="flip_migration", id="m1",
            epochs={"s1": epochs["s1"] + 1, "s2": epochs["s2"]})
    refused(m, "INVALID_ARGUMENT", op="flip_migration", id="m1", epochs={"s1": 1})
    refused(m, "INVALID_ARGUMENT", op="flip_migration", id="m1", epochs=epochs,
            lsns={"s1": -1})
    refused(m, "INVALID_ARGUMENT", op="flip_migration", id="m1", epochs=epochs, lsns=[1])
    lsns = {"s1": 40, "s2": 41, "s3": (1 << 32) + 7}
    flipped = ok(m, op="flip_migration", id="m1", epochs=epochs, lsns=lsns)
    assert flipped["ring_version"] == ring_before["version"] + 1
    record = m.current.migration
    assert record is not None and record.flip_lsns == lsns  # what a watch needs
    assert record.ring_before == {"s1": 1, "s2": 1}
    assert record.flip_ring_version == flipped["ring_version"]
    assert m.current.ring.shards == {"s1": 1, "s2": 1, "s3": 2}
    assert m.current.shards["s3"].state == "active"
    refused(m, "VERSION_MISMATCH", op="abort_migration", id="m1", now=13.0)
    ok(m, op="migration_state", id="m1", state="done", now=14.0)
    assert m.current.migration is None
    finished = m.current.find_migration("m1")
    assert finished is not None and finished.state == "done" and finished.finished_at == 14.0
    refused(m, "VERSION_MISMATCH", op="abort_migration", id="m1", now=15.0)
    refused(m, "VERSION_MISMATCH", op="begin_migration", id="m1", now=16.0)
    refused(m, "NOT_FOUND", op="abort_migration", id="m404", now=15.0)


def test_abort_before_the_flip_removes_the_target_and_parks_its_members() -> None:
    m = booted()
    ok(m, op="begin_migration", id="m1", shard="s7", now=1.0)
    placed = ok(m, op="register_node", url="http://127.0.0.1:9003", shard="s7")
    ok(m, op="migration_state", id="m1", state="flipping", now=2.0)
    ring = m.current.ring.to_dict()
    ok(m, op="abort_migration", id="m1", error="operator", now=3.0)
    assert "s7" not in m.current.shards and m.current.ring.to_dict() == ring
    node = m.current.nodes[placed["node_id"]]
    assert (node.shard, node.role, node.status) == (None, "none", "draining")
    record = m.current.find_migration("m1")
    assert record is not None and record.state == "aborted" and record.error == "operator"
    ok(m, op="begin_migration", id="m2", now=4.0)  # the next one may start


def test_bad_input_is_refused_and_changes_nothing() -> None:
    m = booted()
    for command, code in (
        ({"id": "m1", "weight": 0}, "INVALID_ARGUMENT"),
        ({"id": "m1", "weight": "heavy"}, "INVALID_ARGUMENT"),
        ({"id": "m1", "shard": "s1"}, "VERSION_MISMATCH"),
        ({"id": "m1", "shard": "bad id!"}, "INVALID_ARGUMENT"),
        ({"id": "m1", "kind": "split"}, "INVALID_ARGUMENT"),
        ({"id": "", "now": 1.0}, "INVALID_ARGUMENT"),
    ):
        refused(m, code, op="begin_migration", **command)
    refused(m, "NOT_FOUND", op="migration_progress", id="m9", keys_moved=1)
    empty = MapStateMachine()
    refused(empty, "UNAVAILABLE", op="begin_migration", id="m1")


def test_the_map_round_trips_the_migration_record() -> None:
    from shardkv.cluster.cluster_map import ClusterMap

    m = booted()
    ok(m, op="begin_migration", id="m1", now=1.0)
    restored = ClusterMap.from_dict(m.current.to_dict())
    assert restored.migration == m.current.migration
    other = MapStateMachine()
    other.restore(m.snapshot())
    assert other.current.migration == m.current.migration


def booted_three() -> MapStateMachine:
    m = MapStateMachine()
    ok(m, op="bootstrap", shards=3, replication_factor=1)
    for port in (9001, 9002, 9003):
        ok(m, op="register_node", url=f"http://127.0.0.1:{port}")
    return m


def test_remove_drains_into_every_other_shard_and_retires_the_shard_at_done() -> None:
    m = booted_three()
    ring_version = m.current.ring.version
    started = ok(m, op="begin_migration", id="r1", kind="remove", shard="s2", now=1.0)
    assert (started["migration"], started["shard"]) == ("r1", "s2")
    record = m.current.migration
    assert record is not None and record.kind == "remove"
    assert (record.sources, record.targets) == (["s2"], ["s1", "s3"])
    assert record.target_ring == {"s1": 1, "s3": 1}
    assert m.current.ring.shards == {"s1": 1, "s2": 1, "s3": 1}  # unchanged until the flip
    ok(m, op="migration_state", id="r1", state="flipping", now=2.0)
    ok(m, op="flip_migration", id="r1", epochs={"s2": m.current.shards["s2"].epoch}, now=3.0)
    assert m.current.ring.shards == {"s1": 1, "s3": 1}
    assert m.current.ring.version == ring_version + 1
    assert "s2" in m.current.shards  # still cleaning: its primary deletes the moved keys
    member = m.current.shards["s2"].members[0]
    ok(m, op="migration_state", id="r1", state="done", now=4.0)
    assert "s2" not in m.current.shards
    node = m.current.nodes[member]
    assert (node.shard, node.role, node.status) == (None, "none", "draining")
    finished = m.current.find_migration("r1")
    assert finished is not None and finished.state == "done" and not finished.leftovers
    assert finished.retired == [member]


def test_weight_up_takes_from_the_others_and_down_gives_to_them() -> None:
    m = booted_three()
    ok(m, op="begin_migration", id="w1", kind="weight", shard="s1", weight=3, now=1.0)
    record = m.current.migration
    assert record is not None
    assert (record.sources, record.targets) == (["s2", "s3"], ["s1"])
    assert record.target_ring == {"s1": 3, "s2": 1, "s3": 1}
    ok(m, op="migration_state", id="w1", state="flipping", now=2.0)
    epochs = {s: m.current.shards[s].epoch for s in ("s2", "s3")}
    ok(m, op="flip_migration", id="w1", epochs=epochs, now=3.0)
    ok(m, op="migration_state", id="w1", state="done", now=4.0)
    assert m.current.ring.shards == {"s1": 3, "s2": 1, "s3": 1}
    assert set(m.current.shards) == {"s1", "s2", "s3"}
    ok(m, op="begin_migration", id="w2", kind="weight", shard="s1", weight=1, now=5.0)
    record = m.current.migration
    assert record is not None
    assert (record.sources, record.targets) == (["s1"], ["s2", "s3"])


def test_an_aborted_remove_leaves_leftovers_that_block_the_next_migration() -> None:
    m = booted_three()
    ring = m.current.ring.to_dict()
    ok(m, op="begin_migration", id="r1", kind="remove", shard="s3", now=1.0)
    ok(m, op="abort_migration", id="r1", error="operator", now=2.0)
    assert m.current.ring.to_dict() == ring and "s3" in m.current.shards
    record = m.current.find_migration("r1")
    assert record is not None and record.state == "aborted"
    assert record.leftovers == ["s1", "s2"]
    refused(m, "VERSION_MISMATCH", op="begin_migration", id="r2", kind="remove", shard="s3",
            now=3.0)
    ok(m, op="leftovers_cleaned", id="r1", shard="s1")
    version = m.current.version
    ok(m, op="leftovers_cleaned", id="r1", shard="s1")  # idempotent: no new map version
    assert m.current.version == version
    ok(m, op="leftovers_cleaned", id="r1", shard="s2")
    ok(m, op="begin_migration", id="r2", kind="remove", shard="s3", now=4.0)


def test_bad_removes_and_weights_are_refused_and_change_nothing() -> None:
    m = booted()
    for command, code in (
        ({"kind": "remove", "shard": "s9"}, "NOT_FOUND"),
        ({"kind": "remove"}, "INVALID_ARGUMENT"),
        ({"kind": "weight", "shard": "s1"}, "INVALID_ARGUMENT"),
        ({"kind": "weight", "shard": "s1", "weight": 0}, "INVALID_ARGUMENT"),
        ({"kind": "weight", "shard": "s1", "weight": "x"}, "INVALID_ARGUMENT"),
        ({"kind": "weight", "shard": "s1", "weight": 1}, "INVALID_ARGUMENT"),
        ({"kind": "weight", "shard": "s9", "weight": 2}, "NOT_FOUND"),
    ):
        refused(m, code, op="begin_migration", id="b1", now=1.0, **command)
    single = MapStateMachine()
    ok(single, op="bootstrap", shards=1, replication_factor=1)
    refused(single, "INVALID_ARGUMENT", op="begin_migration", id="b1", kind="remove",
            shard="s1", now=1.0)
    ok(m, op="begin_migration", id="b2", kind="remove", shard="s1", now=1.0)
    refused(m, "VERSION_MISMATCH", op="begin_migration", id="b3", kind="weight", shard="s2",
            weight=3, now=2.0)


def test_a_record_without_targets_reads_as_an_add_to_its_shard() -> None:
    from shardkv.cluster.migration_record import MigrationRecord

    old = {"id": "m1", "kind": "add", "target": "s3", "sources": ["s1"],
           "target_ring": {"s1": 1, "s3": 1}}
    record = MigrationRecord.from_dict(old)
    assert record.targets == ["s3"] and record.leftovers == []
