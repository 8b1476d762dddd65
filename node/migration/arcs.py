"""Which keys move: the hash arcs that one source shard gives to the target shards.

A key moves from ``source`` when the current ring gives it to the source and the target ring
to one of ``targets`` (its destination). Both rings are computed by ``cluster/ring.py``,
exactly as the client and the coordinators compute them, so every process agrees on the
moving set. An add has one target (the new shard); a remove or a lower weight has one source
and every other shard as a target, so one source stream fans out to several targets.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import logging
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.ring import HASH_FUNCTIONS, HASH_MANY, Continuum, ring_for, shard_for_key

logger = logging.getLogger(__name__)
_CHECK_KEYS = 256  # keys compared with shard_for_key before the fast lookup is trusted
# Per (ring, target ring): every map change rebuilds the fence's arcs, the rings rarely change.
_lookups: dict[tuple[object, object], _FastRings | None] = {}
_LOOKUPS_LIMIT = 8
# Per rings and question (a source's destinations, a shard's keys): see _ArcTable.
_tables: dict[tuple[object, ...], _ArcTable | None] = {}


@dataclass(frozen=True, slots=True)
class _FastRings:
    """Owners now and after for one hash of each key, one key or a list at a time."""

    hash_one: Callable[[object], int]
    hash_many: Callable[[list[bytes]], list[int]]
    now: Continuum
    after: Continuum

    def lookup(self, key: bytes) -> tuple[str, str]:
        hashed = self.hash_one(key)
        return self.now.owner(hashed), self.after.owner(hashed)

    def lookup_many(self, keys: list[bytes]) -> tuple[list[str], list[str]]:
        hashes = self.hash_many(keys)
        return self.now.owners_of(hashes), self.after.owners_of(hashes)


def _md5_digests(keys: Iterable[bytes]) -> Iterator[bytes]:
    return map(_DIGEST, map(functools.partial(hashlib.md5, usedforsecurity=False), keys))


def _blake2b_digests(keys: Iterable[bytes]) -> Iterator[bytes]:
    return map(_DIGEST, map(functools.partial(hashlib.blake2b, digest_size=8), keys))


# Each key's ring hash as bytes that sort as the hash does, made in C with no bytecode per
# key: md5's first 8 bytes are the hash (big-endian), and the whole 16-byte digest sorts
# against an 8-byte point exactly as that integer does (a digest that starts with a point's
# bytes is longer, so it sorts after it, where ``bisect`` puts an equal hash); blake2b's
# 8-byte digest is the hash. The int of each digest (``HASH_MANY``) was half the hashing.
_DIGEST = operator.methodcaller("digest")
_DIGESTS: dict[str, Callable[[Iterable[bytes]], Iterator[bytes]]] = {
    "md5": _md5_digests, "blake2b": _blake2b_digests}


@dataclass(frozen=True, slots=True)
class _ArcTable:
    """A label per arc of the hash space (a key's destination, or whether a shard owns it),
    found with one C bisection of the key's digest: the points of the rings involved, merged,
    cut the space into arcs on which every owner is constant, so each arc is labelled once,
    here. The copy asks for every key of the source shard, the clean-up for every key
    left."""

    points: list[bytes]  # 8-byte big-endian ring points, sorted
    labels: list[Any]  # per ``bisect(points, digest)``: one more than ``points``
    digests: Callable[[Iterable[bytes]], Iterator[bytes]]

    @classmethod
    def of(cls, hash_name: str, points: Iterable[int],
           label: Callable[[int], Any]) -> _ArcTable | None:
        merged = sorted(set(points))
        if hash_name not in _DIGESTS or not merged:
            return None
        # The hashes that bisect to ``i`` lie in [merged[i-1], merged[i]): every ring's owner
        # there is that of ``merged[i] - 1`` (the first point above the hash); past the last
        # point they wrap to the first.
        return cls([p.to_bytes(8, "big") for p in merged],
                   [label(p - 1) for p in merged] + [label(merged[-1])], _DIGESTS[hash_name])

    def labels_of(self, keys: list[bytes]) -> list[Any]:
        at = functools.partial(bisect.bisect, self.points)
        return list(map(self.labels.__getitem__, map(at, self.digests(keys))))


def _checked(table: _ArcTable | None, expected: Callable[[list[bytes]], list[Any]]
             ) -> _ArcTable | None:
    """``table`` if it labels the check keys as ``expected`` does, else None (and a warning:
    the slower lookups give the same answers)."""
    if table is None:
        return None
    checked = [f"ring-check-{i}".encode() for i in range(_CHECK_KEYS)]
    if table.labels_of(checked) != expected(checked):
        logger.warning("migration arcs: the arc table disagrees with the ring lookup")
        return None
    return table


def _cached_table(key: tuple[object, ...], build: Callable[[], _ArcTable | None]
                  ) -> _ArcTable | None:
    if key not in _tables:
        if len(_tables) >= _LOOKUPS_LIMIT:
            _tables.pop(next(iter(_tables)))
        _tables[key] = build()
    return _tables[key]


def _moving_table(rings: _FastRings | None, current: RingSpec, target_ring: RingSpec,
                  source: str, targets: frozenset[str]) -> _ArcTable | None:
    if rings is None:
        return None

    def destination(hashed: int) -> str | None:
        now, after = rings.now.owner(hashed), rings.after.owner(hashed)
        return after if now == source and after != source and after in targets else None

    def slowly(keys: list[bytes]) -> list[str | None]:
        return [destination(h) for h in rings.hash_many(keys)]

    return _cached_table(
        ("moving", _spec_key(current), _spec_key(target_ring), source, targets),
        lambda: _checked(_ArcTable.of(current.hash, [*rings.now.points, *rings.after.points],
                                      destination), slowly))


def _spec_key(spec: RingSpec) -> object:
    return (spec.hash, spec.vnodes, tuple(sorted(spec.shards.items())))


def _fast_lookup(current: RingSpec, target_ring: RingSpec) -> _FastRings | None:
    key = (_spec_key(current), _spec_key(target_ring))
    if key not in _lookups:
        if len(_lookups) >= _LOOKUPS_LIMIT:
            _lookups.pop(next(iter(_lookups)))
        _lookups[key] = _build_lookup(current, target_ring)
    return _lookups[key]


def _build_lookup(current: RingSpec, target_ring: RingSpec) -> _FastRings | None:
    """Owners now and after with one hash, or None when the rings cannot be read that way
    (another hash per ring, or a uhashring whose internals differ: then every lookup goes
    through ``shard_for_key``, slower but the same answers)."""
    if current.hash != target_ring.hash or current.hash not in HASH_FUNCTIONS:
        return None
    try:
        rings = _FastRings(HASH_FUNCTIONS[current.hash], HASH_MANY[current.hash],
                           Continuum.of(ring_for(current)), Continuum.of(ring_for(target_ring)))
    except (AttributeError, KeyError, TypeError):
        return None
    checked = [f"ring-check-{i}".encode() for i in range(_CHECK_KEYS)]
    expected = [(shard_for_key(current, k), shard_for_key(target_ring, k)) for k in checked]
    if [rings.lookup(k) for k in checked] != expected or list(
            zip(*rings.lookup_many(checked), strict=True)) != expected:
        logger.warning("migration arcs: the fast ring lookup disagrees with the ring; "
                       "using shard_for_key")
        return None
    return rings


@dataclass(frozen=True, slots=True)
class MovingArcs:
    current: RingSpec
    target_ring: RingSpec
    source: str
    targets: frozenset[str]
    _lookup: _FastRings | None = field(default=None, compare=False, repr=False)
    _table: _ArcTable | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, current: RingSpec, target_ring: RingSpec, source: str,
           targets: Iterable[str]) -> MovingArcs:
        wanted = frozenset(targets)
        lookup = _fast_lookup(current, target_ring)
        return cls(current, target_ring, source, wanted, lookup,
                   _moving_table(lookup, current, target_ring, source, wanted))

    def destination(self, key: bytes) -> str | None:
        """The target shard ``key`` moves to, or None if it does not move from the source."""
        if self._lookup is not None:
            now, after = self._lookup.lookup(key)
            if now != self.source or after == self.source or after not in self.targets:
                return None
            return after
        # The target ring first: for an add, most keys do not go to the target.
        owner = shard_for_key(self.target_ring, key)
        if owner == self.source or owner not in self.targets:
            return None
        return owner if shard_for_key(self.current, key) == self.source else None

    def destinations(self, keys: list[bytes]) -> list[str | None]:
        """``destination`` of each key, hashed once each with no call per key (the bulk
        copy asks this for every key of the source)."""
        if self._lookup is None:
            return [self.destination(key) for key in keys]
        if self._table is not None:
            return self._table.labels_of(keys)
        source, targets = self.source, self.targets
        nows, afters = self._lookup.lookup_many(keys)
        return [after if now == source and after != source and after in targets else None
                for now, after in zip(nows, afters, strict=True)]

    def moves(self, key: bytes) -> bool:
        return self.destination(key) is not None


def owners(spec: RingSpec, keys: list[bytes]) -> list[str]:
    """``shard_for_key(spec, key)`` for each key, one hash each and no call per key (the
    cleaning asks it for every key of a shard)."""
    rings = _fast_lookup(spec, spec) if spec.shards else None
    if rings is None:
        return [shard_for_key(spec, key) for key in keys]
    return rings.now.owners_of(rings.hash_many(keys))


def owned_by(spec: RingSpec, shard: str, keys: list[bytes]) -> list[bool]:
    """Whether ``spec`` gives each key to ``shard`` (the clean-up asks for every key of its
    shard): one C bisection of each key's digest, no call per key."""
    rings = _fast_lookup(spec, spec) if spec.shards else None
    if rings is None:
        return [owner == shard for owner in owners(spec, keys)]

    def owned(hashed: int) -> bool:
        return rings.now.owner(hashed) == shard

    def slowly(keys: list[bytes]) -> list[bool]:
        return [owner == shard for owner in owners(spec, keys)]

    table = _cached_table(("owned", _spec_key(spec), shard), lambda: _checked(
        _ArcTable.of(spec.hash, rings.now.points, owned), slowly))
    return slowly(keys) if table is None else table.labels_of(keys)


def target_spec(current: RingSpec, weights: dict[str, int]) -> RingSpec:
    """The ring after the flip: same hash and vnodes, the target weights."""
    return RingSpec(version=current.version + 1, hash=current.hash, vnodes=current.vnodes,
                    shards=dict(weights))
