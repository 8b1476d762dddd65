"""Key -> shard: consistent hashing over shard ids, identical in every process.

The coordinator, the nodes and the client all call :func:`shard_for_key` with the map they
hold. The ring is built with uhashring from the map's ring spec (shard ids, weights, vnode
count and the name of the hash function), so two processes holding the same ring version
compute the same owner for every key. uhashring's default hash runs ``str()`` over the key,
which for ``bytes`` would hash their ``repr``; the functions here hash the raw bytes instead,
and are named in the map so a future change of function is a ring version change, not a
silent disagreement.

Rings are cached per spec (a map change that leaves the ring alone costs nothing).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardkv.cluster.cluster_map import ClusterMap, RingSpec
from shardkv.cluster.errors import Unavailable
from uhashring import HashRing


def _to_bytes(key: object) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    return str(key).encode("utf-8")


def _md5_constructor() -> Callable[[bytes], Any]:
    """CPython's own MD5 (``_md5``) when it is there, else hashlib's: the same digest, but
    hashlib's goes through OpenSSL's EVP layer, which for a key of a few bytes costs about
    five times as much (1.2 against 0.25 us here), and every keyed request hashes its key in
    the client and again in the node (issue 17). The ring only needs a stable spread, not a
    secure digest."""
    try:  # optional: absent from some builds (FIPS ones)
        builtin: Callable[[bytes], Any] = importlib.import_module("_md5").md5
        if builtin(b"ring").digest() == hashlib.md5(b"ring", usedforsecurity=False).digest():
            return builtin
    except (ImportError, AttributeError, ValueError):
        pass
    return functools.partial(hashlib.md5, usedforsecurity=False)


_md5 = _md5_constructor()


def _md5_64(key: object) -> int:
    return int.from_bytes(_md5(_to_bytes(key)).digest()[:8], "big")


def _blake2b_64(key: object) -> int:
    return int.from_bytes(hashlib.blake2b(_to_bytes(key), digest_size=8).digest(), "big")


HASH_FUNCTIONS: dict[str, Callable[[object], int]] = {
    "md5": _md5_64,
    "blake2b": _blake2b_64,
}


def _md5_64_many(keys: list[bytes]) -> list[int]:
    md5, from_bytes = _md5, int.from_bytes
    return [from_bytes(md5(k).digest()[:8], "big") for k in keys]


def _blake2b_64_many(keys: list[bytes]) -> list[int]:
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [from_bytes(blake2b(k, digest_size=8).digest(), "big") for k in keys]


# The same functions over a list of raw keys, with no call per key: a migration hashes every
# key of a shard (the copy and the cleaning), a million calls through ``_to_bytes``.
HASH_MANY: dict[str, Callable[[list[bytes]], list[int]]] = {
    "md5": _md5_64_many,
    "blake2b": _blake2b_64_many,
}

_RingKey = tuple[str, int, tuple[tuple[str, int], ...]]
Owner = Callable[[bytes], str]
_cache: dict[_RingKey, tuple[HashRing, Owner]] = {}
_cache_lock = threading.Lock()
_CACHE_LIMIT = 16
_CHECK_KEYS = 256  # keys compared with uhashring before the fast lookup is trusted


def _ring_key(spec: RingSpec) -> _RingKey:
    return (spec.hash, spec.vnodes, tuple(sorted(spec.shards.items())))


def build_ring(spec: RingSpec) -> HashRing:
    """A uhashring ring for ``spec`` (shards added in sorted order: deterministic even when
    two vnodes collide)."""
    try:
        hash_fn = HASH_FUNCTIONS[spec.hash]
    except KeyError:
        raise ValueError(
            f"unknown ring hash {spec.hash!r}; known: {', '.join(sorted(HASH_FUNCTIONS))}"
        ) from None
    nodes = {sid: {"weight": weight, "vnodes": spec.vnodes} for sid, weight in sorted(
        spec.shards.items()
    )}
    return HashRing(nodes=nodes, hash_fn=hash_fn, vnodes=spec.vnodes)


@dataclass(frozen=True, slots=True)
class Continuum:
    """A ring's sorted points and their owners, read once from the uhashring ring: the owner
    of a hash is the first point at or after it (wrapping), exactly ``get_node``. Looking a
    key up is then one hash and one C bisection, without uhashring's per-call overhead (most
    of a lookup's cost: every keyed request asks, in the client and in the node)."""

    points: list[int]
    owners: list[str]

    @classmethod
    def of(cls, ring: HashRing) -> Continuum:
        """Raises AttributeError/KeyError/TypeError if uhashring's internals differ."""
        runtime = ring.runtime
        points = list(runtime._keys)
        return cls(points, [runtime._ring[p] for p in points])

    def owner(self, hashed: int) -> str:
        at = bisect.bisect(self.points, hashed)
        return self.owners[at if at < len(self.points) else 0]

    def owners_of(self, hashes: list[int]) -> list[str]:
        """``owner`` of each hash, in C loops (a migration asks for every key it reads)."""
        wrapped = self.owners + self.owners[:1]  # past the last point: the first owner
        at = functools.partial(bisect.bisect, self.points)
        return list(map(wrapped.__getitem__, map(at, hashes)))


def _owner_function(spec: RingSpec, ring: HashRing) -> Owner:
    """``key -> shard`` through the ``Continuum`` when it agrees with ``ring`` on every check
    key, else through uhashring itself (a uhashring whose internals differ: slower, same
    answers)."""
    get_node: Owner = ring.get_node
    try:
        continuum = Continuum.of(ring)
    except (AttributeError, KeyError, TypeError):
        return get_node
    hash_fn = HASH_FUNCTIONS[spec.hash]
    owner_of = continuum.owner

    def owner(key: bytes) -> str:
        return owner_of(hash_fn(key))

    for i in range(_CHECK_KEYS):
        key = f"ring-check-{i}".encode()
        if owner(key) != get_node(key):
            return get_node
    return owner


# The ring of the spec objects seen last, by identity: every keyed request asks (the client
# routing each key, a node checking it owns each key), and building ``_ring_key`` (a sorted
# tuple) under the lock cost more than the ring lookup itself (issue 17). A spec is mutable
# (the coordinator edits its own map's), so a hit also needs the same fields: version,
# hash, vnodes and an equal copy of the shards (a dict compare, cheap for a few shards). The
# entry holds the spec, so its id cannot be reused while cached.
_by_spec: dict[int, tuple[RingSpec, int, str, int, dict[str, int], HashRing, Owner]] = {}


def ring_for(spec: RingSpec) -> HashRing:
    """The cached ring of ``spec``."""
    return _cached(spec)[0]


def owner_function(spec: RingSpec) -> Owner:
    """The cached ``key -> shard`` function of ``spec`` (bytes keys)."""
    return _cached(spec)[1]


def _cached(spec: RingSpec) -> tuple[HashRing, Owner]:
    hit = _by_spec.get(id(spec))
    if (hit is not None and hit[0] is spec and hit[1] == spec.version and hit[2] == spec.hash
            and hit[3] == spec.vnodes and hit[4] == spec.shards):
        return hit[5], hit[6]
    ring, owner = _cached_by_key(spec)
    with _cache_lock:
        if len(_by_spec) >= _CACHE_LIMIT:
            _by_spec.pop(next(iter(_by_spec)))
        _by_spec[id(spec)] = (spec, spec.version, spec.hash, spec.vnodes, dict(spec.shards),
                              ring, owner)
    return ring, owner


def _cached_by_key(spec: RingSpec) -> tuple[HashRing, Owner]:
    key = _ring_key(spec)
    with _cache_lock:
        found = _cache.get(key)
    if found is not None:
        return found
    ring = build_ring(spec)
    found = (ring, _owner_function(spec, ring))
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.pop(next(iter(_cache)))
        _cache[key] = found
    return found


def shard_for_key(cluster_map: ClusterMap | RingSpec, key: bytes) -> str:
    """The id of the shard that owns ``key`` under ``cluster_map``'s ring.

    Raises ``Unavailable`` when the ring has no shard yet (cluster not bootstrapped).
    """
    spec = cluster_map.ring if isinstance(cluster_map, ClusterMap) else cluster_map
    if not spec.shards:
        raise Unavailable("the cluster has no shards yet (not bootstrapped)")
    return owner_function(spec)(_to_bytes(key))
