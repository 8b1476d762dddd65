"""The ownership checker (``chaos/checkers/ownership.py``) and its probe
(``chaos/ownership_probe.py``): a key held by two shards must fail it (the negative control,
on states and on real stores), a key held only by its ring owner must pass, and a migration
still running makes the answer unknown. Also the versioned-register model's one allowance for
resharding: a re-stamp by a migration (the same value in a higher block of 2^32 versions, seed 3
of ``reshard-faults`` had a key written at v=1394 during the copy and re-stamped 4294968339)
is legal, a jump within the block with the same value is not."""

from __future__ import annotations

from pathlib import Path

from shardkv.chaos.checkers.ownership import check_ownership
from shardkv.chaos.history import NemesisEvent, Operation
from shardkv.chaos.linearizability import check_history
from shardkv.chaos.models import MIGRATION_VERSION_GAP, MODELS
from shardkv.chaos.ownership_probe import probe_ownership
from shardkv.node.storage.store import Store
from shardkv.node.storage.store_model import StoreConfig

OWNERS = {"k1": "s1", "k2": "s2", "k3": "s3"}


def test_a_key_on_two_shards_is_an_anomaly() -> None:
    holdings = {"s1": {"k1", "k3"}, "s2": {"k2"}, "s3": {"k3"}}
    result = check_ownership(OWNERS, holdings, OWNERS.__getitem__)
    assert result.verdict == "anomaly"
    assert [(a["kind"], a["key"], a["holders"]) for a in result.anomalies] == [
        ("two-owners", "k3", ["s1", "s3"])]


def test_a_key_held_only_by_a_shard_that_does_not_own_it_is_an_anomaly() -> None:
    result = check_ownership(OWNERS, {"s1": {"k1", "k3"}, "s2": {"k2"}, "s3": set()},
                             OWNERS.__getitem__)
    assert [(a["kind"], a["key"]) for a in result.anomalies] == [("wrong-owner", "k3")]


def test_every_key_on_its_owner_only_passes_and_counts_migrations() -> None:
    events = [NemesisEvent(1.0, "reshard-add", "start", (), {"migration": "m1"}),
              NemesisEvent(2.0, "reshard-add", "stop", (), {"migration": "m1",
                                                            "state": "done"}),
              NemesisEvent(3.0, "reshard-add-kill-target", "start", (),
                           {"refused": {"status": 409}})]
    result = check_ownership(OWNERS, {"s1": {"k1"}, "s2": {"k2"}, "s3": {"k3"}},
                             OWNERS.__getitem__, events=events)
    assert result.verdict == "ok"
    assert result.stats["migrations"] == {"done": 1, "refused": 1}
    assert result.stats["keys_held"] == 3


def test_a_running_migration_or_an_unscanned_primary_is_unknown() -> None:
    two = {"s1": {"k1", "k3"}, "s2": {"k2"}, "s3": {"k3"}}
    assert check_ownership(OWNERS, two, OWNERS.__getitem__,
                           migration_state="cleaning").verdict == "unknown"
    unscanned = check_ownership(OWNERS, {"s1": {"k1"}, "s2": None, "s3": {"k3"}},
                                OWNERS.__getitem__)
    assert unscanned.verdict == "unknown"


async def _store_with(path: Path, keys: list[str]) -> None:
    store = await Store.open(StoreConfig(data_dir=path, ttl_sweep_interval_s=0))
    try:
        for key in keys:
            await store.put(key.encode(), b"v")
    finally:
        await store.close()


async def test_the_probe_finds_a_copy_left_on_a_source_and_the_checker_fails(
        tmp_path: Path) -> None:
    """Negative control on real stores: n1 (primary of s1) kept a copy of a key the ring
    gives to s2 (what a source that never cleaned would leave)."""
    final_map = {"ring": {"version": 2, "shards": {"s1": {"weight": 1}, "s2": {"weight": 1}}},
                 "shards": {"s1": {"primary": "n1"}, "s2": {"primary": "n4"}},
                 "migration": None}
    _, owner_of, _ = await probe_ownership(final_map, lambda n: str(tmp_path / n), "memory", [])
    keys = [f"key-{i}" for i in range(40)]
    on_s2 = [k for k in keys if owner_of(k) == "s2"]
    on_s1 = [k for k in keys if owner_of(k) == "s1"]
    assert on_s1 and on_s2
    await _store_with(tmp_path / "n1", on_s1 + on_s2[:1])  # the leftover copy
    await _store_with(tmp_path / "n4", on_s2)
    holdings, owner_of, state = await probe_ownership(final_map, lambda n: str(tmp_path / n),
                                                      "memory", keys)
    result = check_ownership(keys, holdings, owner_of, migration_state=state)
    assert result.verdict == "anomaly"
    assert [(a["kind"], a["key"]) for a in result.anomalies] == [("two-owners", on_s2[0])]
    await _store_with(tmp_path / "clean-n1", on_s1)
    holdings, owner_of, state = await probe_ownership(
        final_map, lambda n: str(tmp_path / ("clean-n1" if n == "n1" else n)), "memory", keys)
    assert check_ownership(keys, holdings, owner_of, migration_state=state).verdict == "ok"


def _op(index: int, f: str, value: object, output: object, version: int, call: float,
        ret: float) -> Operation:
    return Operation(id=index, process=0, f=f, key="k", value=value, type="ok",
                     output=output, version=version, call=call, ret=ret,
                     model="versioned-register")


def test_a_migration_restamp_is_legal_and_a_small_jump_is_not() -> None:
    model = MODELS["versioned-register"]
    moved = [_op(0, "write", "a", None, 7, 0.0, 1.0),
             _op(1, "read", None, "a", 7, 2.0, 3.0),
             _op(2, "read", None, "a", MIGRATION_VERSION_GAP + 3, 4.0, 5.0),
             _op(3, "write", "b", None, MIGRATION_VERSION_GAP + 9, 6.0, 7.0),
             _op(4, "read", None, "b", MIGRATION_VERSION_GAP + 9, 8.0, 9.0)]
    assert check_history(moved, model).verdict == "ok"
    doubled = [*moved[:2], _op(2, "read", None, "a", 9, 4.0, 5.0)]
    assert check_history(doubled, model).verdict == "illegal"
    moved_twice = [*moved, _op(5, "read", None, "b", 2 * MIGRATION_VERSION_GAP + 1, 10, 11)]
    assert check_history(moved_twice, model).verdict == "ok"
    back_down = [*moved, _op(5, "read", None, "b", MIGRATION_VERSION_GAP + 20, 10, 11)]
    assert check_history(back_down, model).verdict == "illegal"
