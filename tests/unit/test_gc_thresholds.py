"""A node process raises the collector's young-generation threshold (node/gc_thresholds.py),
unless ``SHARDKV_GC_GEN0`` says otherwise; the older generations keep Python's."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from shardkv.node import gc_thresholds


@pytest.fixture(autouse=True)
def thresholds_restored() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_a_node_collects_its_young_generation_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHARDKV_GC_GEN0", raising=False)
    _, gen1, gen2 = gc.get_threshold()
    gc_thresholds.apply()
    assert gc.get_threshold() == (gc_thresholds.GEN0_THRESHOLD, gen1, gen2)


def test_the_variable_sets_it_and_zero_keeps_pythons(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    monkeypatch.setenv("SHARDKV_GC_GEN0", "0")
    gc_thresholds.apply()
    assert gc.get_threshold() == before
    monkeypatch.setenv("SHARDKV_GC_GEN0", "2500")
    gc_thresholds.apply()
    assert gc.get_threshold()[0] == 2500
