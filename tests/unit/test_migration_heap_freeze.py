"""The heap is frozen (out of the cyclic GC's full collections) while a node takes part in a
migration, and given back when none runs; a second migration id refreezes; off means off."""

from __future__ import annotations

import gc

from shardkv.node.migration.heap_freeze import HeapFreeze


def test_frozen_while_a_migration_runs_and_given_back_after() -> None:
    assert gc.get_freeze_count() == 0
    heap = HeapFreeze(enabled=True)
    held = [object() for _ in range(10)], {"a": []}  # something tracked to freeze
    try:
        heap.follow("m1")
        assert heap.migration == "m1" and gc.get_freeze_count() > 0
        heap.follow("m1")  # the same migration: nothing changes
        assert heap.migration == "m1"
        heap.follow(None)
        assert heap.migration is None and gc.get_freeze_count() == 0
        heap.follow("m2")
        assert heap.migration == "m2" and gc.get_freeze_count() > 0
    finally:
        heap.follow(None)
        gc.unfreeze()
    assert gc.get_freeze_count() == 0 and held


def test_disabled_it_never_freezes() -> None:
    heap = HeapFreeze(enabled=False)
    heap.follow("m1")
    assert heap.migration is None and gc.get_freeze_count() == 0
