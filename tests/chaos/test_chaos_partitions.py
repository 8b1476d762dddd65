"""Partition shapes (grudges) are pure, symmetric and have the shape their name says."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from shardkv.chaos.nemesis.partitions import (
    blocked_pairs,
    bridge,
    complete_grudge,
    halves,
    isolate,
    majorities_ring,
)

node_lists = st.integers(3, 9).map(lambda n: [f"n{i}" for i in range(n)])


def symmetric(grudge) -> bool:
    return all(a in grudge[b] for a, peers in grudge.items() for b in peers)


def test_complete_grudge_and_isolate():
    grudge = complete_grudge([["a", "b"], ["c"]])
    assert grudge == {"a": {"c"}, "b": {"c"}, "c": {"a", "b"}}
    assert blocked_pairs(isolate(["a", "b", "c"], ["b"])) == {
        ("a", "b"), ("c", "b"), ("b", "a"), ("b", "c")
    }


@given(nodes=node_lists, seed=st.integers(0, 1000))
def test_majorities_ring_every_node_sees_a_majority_none_the_same(nodes, seed):
    grudge = majorities_ring(nodes, random.Random(seed))
    majority = len(nodes) // 2 + 1
    assert symmetric(grudge)
    views = [frozenset(nodes) - grudge[n] for n in nodes]
    assert all(len(v) >= majority for v in views)
    assert len(set(views)) == len(nodes)


@given(nodes=node_lists, seed=st.integers(0, 1000))
def test_halves_and_bridge(nodes, seed):
    h = halves(nodes, random.Random(seed))
    assert symmetric(h)
    sides = {frozenset(nodes) - h[n] for n in nodes}
    assert len(sides) == 2 and sum(map(len, sides)) == len(nodes)
    b = bridge(nodes, random.Random(seed))
    hubs = [n for n in nodes if not b[n]]
    assert len(hubs) == 1
    assert halves(nodes, random.Random(seed)) == h  # same seed, same partition
