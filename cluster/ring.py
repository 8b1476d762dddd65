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

import hashlib
import threading
from collections.abc import Callable

from shardkv.cluster.cluster_map import ClusterMap, RingSpec
from shardkv.cluster.errors import Unavailable
from uhashring import HashRing


def _to_bytes(key: object) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    return str(key).encode("utf-8")


def _md5_64(key: object) -> int:
    return int.from_bytes(hashlib.md5(_to_bytes(key), usedforsecurity=False).digest()[:8], "big")


def _blake2b_64(key: object) -> int:
    return int.from_bytes(hashlib.blake2b(_to_bytes(key), digest_size=8).digest(), "big")


HASH_FUNCTIONS: dict[str, Callable[[object], int]] = {
    "md5": _md5_64,
    "blake2b": _blake2b_64,
}


def _md5_64_many(keys: list[bytes]) -> list[int]:
    md5, from_bytes = hashlib.md5, int.from_bytes
    return [from_bytes(md5(k, usedforsecurity=False).digest()[:8], "big") for k in keys]


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
_cache: dict[_RingKey, HashRing] = {}
_cache_lock = threading.Lock()
_CACHE_LIMIT = 16


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


def ring_for(spec: RingSpec) -> HashRing:
    """The cached ring of ``spec``."""
    key = _ring_key(spec)
    with _cache_lock:
        ring = _cache.get(key)
    if ring is not None:
        return ring
    ring = build_ring(spec)
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.pop(next(iter(_cache)))
        _cache[key] = ring
    return ring


def shard_for_key(cluster_map: ClusterMap | RingSpec, key: bytes) -> str:
    """The id of the shard that owns ``key`` under ``cluster_map``'s ring.

    Raises ``Unavailable`` when the ring has no shard yet (cluster not bootstrapped).
    """
    spec = cluster_map.ring if isinstance(cluster_map, ClusterMap) else cluster_map
    if not spec.shards:
        raise Unavailable("the cluster has no shards yet (not bootstrapped)")
    owner: str = ring_for(spec).get_node(_to_bytes(key))
    return owner
