"""Which keys move: the hash arcs that one source shard gives to the target shards.

A key moves from ``source`` when the current ring gives it to the source and the target ring
to one of ``targets`` (its destination). Both rings are computed by ``cluster/ring.py``,
exactly as the client and the coordinators compute them, so every process agrees on the
moving set. An add has one target (the new shard); a remove or a lower weight has one source
and every other shard as a target, so one source stream fans out to several targets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.ring import HASH_FUNCTIONS, HASH_MANY, Continuum, ring_for, shard_for_key

logger = logging.getLogger(__name__)
_CHECK_KEYS = 256  # keys compared with shard_for_key before the fast lookup is trusted
# Per (ring, target ring): every map change rebuilds the fence's arcs, the rings rarely change.
_lookups: dict[tuple[object, object], _FastRings | None] = {}
_LOOKUPS_LIMIT = 8


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

    @classmethod
    def of(cls, current: RingSpec, target_ring: RingSpec, source: str,
           targets: Iterable[str]) -> MovingArcs:
        return cls(current, target_ring, source, frozenset(targets),
                   _fast_lookup(current, target_ring))

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


def target_spec(current: RingSpec, weights: dict[str, int]) -> RingSpec:
    """The ring after the flip: same hash and vnodes, the target weights."""
    return RingSpec(version=current.version + 1, hash=current.hash, vnodes=current.vnodes,
                    shards=dict(weights))
