"""Partition shapes as grudges: for each node, the set of nodes it must not hear from.

Jepsen's vocabulary. A grudge is symmetric here (each side drops the other's traffic), and
pure: the same nodes and the same random generator give the same grudge, so a seeded
schedule replays the same partitions. Whoever enforces it (iptables in namespaces, or the TCP
proxies) only needs the grudge.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

Grudge = dict[str, frozenset[str]]


def complete_grudge(groups: Iterable[Iterable[str]]) -> Grudge:
    """Nodes in different groups cannot talk; nodes in one group can."""
    components = [frozenset(g) for g in groups]
    everyone = frozenset().union(*components) if components else frozenset()
    return {node: everyone - group for group in components for node in group}


def isolate(nodes: Sequence[str], victims: Iterable[str]) -> Grudge:
    """Cut ``victims`` (each on its own) off from everyone else."""
    victims = list(victims)
    rest = [n for n in nodes if n not in victims]
    return complete_grudge([rest, *([v] for v in victims)])


def halves(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """A random minority and majority that cannot reach each other."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    cut = len(shuffled) // 2
    return complete_grudge([shuffled[:cut], shuffled[cut:]])


def bridge(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Two halves that only one bridge node can reach both of (non-transitive reachability)."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    middle = len(shuffled) // 2
    left, hub, right = shuffled[:middle], shuffled[middle], shuffled[middle + 1 :]
    grudge = complete_grudge([left, right])
    grudge[hub] = frozenset()
    return grudge


def majorities_ring(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Every node sees a majority (itself included), but no two nodes see the same one.

    Nodes sit on a random ring and each reaches its ``k`` nearest neighbours on both sides,
    with the smallest ``k`` that makes a majority. Reachability must be symmetric, since a
    TCP connection needs packets both ways: a one-way drop cuts it for both ends. With three
    nodes the ring would connect everyone; the shape is then a path (a bridge), the only
    symmetric way for each node to keep a majority while views differ.
    """
    ring = list(nodes)
    rng.shuffle(ring)
    n = len(ring)
    majority = n // 2 + 1
    k = -(-(majority - 1) // 2)  # ceil: neighbours needed on each side
    if 2 * k >= n - 1:
        return bridge(nodes, rng)
    grudge: Grudge = {}
    for i, node in enumerate(ring):
        visible = {ring[(i + step) % n] for step in range(-k, k + 1)}
        grudge[node] = frozenset(ring) - visible
    return grudge


def blocked_pairs(grudge: Grudge) -> set[tuple[str, str]]:
    """The directed (receiver, sender) pairs to drop."""
    return {(node, peer) for node, peers in grudge.items() for peer in peers}
