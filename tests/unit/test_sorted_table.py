"""SortedTable against a dict model: every lookup, order and range agrees, through the runs'
splits and merges (a small load makes them happen every few operations)."""

from __future__ import annotations

import random

import pytest
from shardkv.node.storage.engines.sorted_table import SortedTable


def check(table: SortedTable[int], model: dict[bytes, int], rng: random.Random) -> None:
    ordered = sorted(model.items())
    assert len(table) == len(model)
    assert list(table.items()) == ordered
    keys, rows = table.frozen()
    assert list(zip(keys, rows, strict=True)) == ordered
    start, end = sorted(rng.randbytes(1) for _ in range(2))
    assert list(table.items(start, end)) == [(k, v) for k, v in ordered if start <= k < end]
    assert list(table.items(start)) == [(k, v) for k, v in ordered if start <= k]
    assert list(table.items(None, end)) == [(k, v) for k, v in ordered if k < end]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_table_agrees_with_a_dict_through_splits_and_merges(seed: int) -> None:
    rng = random.Random(seed)
    table: SortedTable[int] = SortedTable(load=4)
    model: dict[bytes, int] = {}
    for step in range(4000):
        key = rng.randbytes(rng.randint(0, 2))
        if rng.random() < 0.55:
            assert table.set(key, step) == model.get(key)
            model[key] = step
        else:
            assert table.pop(key) == model.pop(key, None)
        assert table.get(key) == model.get(key)
        if step % 97 == 0:
            check(table, model, rng)
    for key in list(model):
        assert table.pop(key) == model.pop(key)
    check(table, model, rng)
    assert table.get(b"x") is None and table.pop(b"x") is None


def test_a_frozen_copy_does_not_see_later_changes() -> None:
    table: SortedTable[int] = SortedTable(load=2)
    for i in range(10):
        table.set(b"%02d" % i, i)
    keys, rows = table.frozen()
    table.set(b"05", 50)
    table.pop(b"01")
    table.set(b"99", 99)
    assert keys == [b"%02d" % i for i in range(10)] and rows == list(range(10))


def test_bulk_build_matches_inserts_and_refuses_unsorted_keys() -> None:
    keys = [b"%03d" % i for i in range(0, 500, 3)]
    built = SortedTable.from_sorted(keys, list(range(len(keys))), load=8)
    assert list(built.items()) == list(zip(keys, range(len(keys)), strict=True))
    assert built.get(b"003") == 1 and built.get(b"004") is None
    built.set(b"004", -1)
    assert built.get(b"004") == -1 and len(built) == len(keys) + 1
    with pytest.raises(ValueError):
        SortedTable.from_sorted([b"b", b"a"], [1, 2])
    with pytest.raises(ValueError):
        SortedTable.from_sorted([b"a", b"a"], [1, 2])
