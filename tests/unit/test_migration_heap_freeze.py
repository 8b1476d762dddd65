"""The heap is frozen (out of the cyclic GC's full collections) while a node takes part in a
migration, refrozen after each batch, and given back when none runs; collections are
counted either way; off means never frozen."""

from __future__ import annotations

import gc

from shardkv.node.migration.heap_freeze import HeapFreeze


def test_frozen_while_a_migration_runs_and_given_back_after() -> None:
    assert gc.get_freeze_count() == 0
    heap = HeapFreeze(enabled=True)
    try:
        heap.follow("m1")
        assert heap.migration == "m1" and heap.frozen and gc.get_freeze_count() > 0
        before = gc.get_freeze_count()
        survivors = [[i] for i in range(1000)]  # a batch's objects that stay alive
        heap.refreeze()
        assert gc.get_freeze_count() >= before + len(survivors)
        assert heap.status()["collections"][1] >= 1  # refreeze collected the young first
        heap.follow("m1")  # the same migration: nothing changes
        assert heap.migration == "m1"
        heap.follow(None)
        assert heap.migration is None and not heap.frozen and gc.get_freeze_count() == 0
        assert heap._timed not in gc.callbacks
        heap.follow("m2")
        assert heap.migration == "m2" and gc.get_freeze_count() > 0
        assert heap.status()["collections"] == [0, 0, 0]  # counted afresh
    finally:
        heap.follow(None)
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_disabled_it_never_freezes_but_counts_collections() -> None:
    heap = HeapFreeze(enabled=False)
    try:
        heap.follow("m1")
        heap.refreeze()
        gc.collect(0)
        assert not heap.frozen and gc.get_freeze_count() == 0
        assert heap.status()["collections"][0] >= 1
    finally:
        heap.follow(None)
    assert heap._timed not in gc.callbacks
