"""The client's read cache without a cluster (client/read_cache.py): what may be served for
which bound, fills that lost a race, own writes, TTL, ring changes, the LRU bounds, stats."""

from __future__ import annotations

import time

import pytest
from shardkv.client import CacheConfig
from shardkv.client.read_cache import ReadCache
from shardkv.client.values import Item


def _item(value: bytes, version: int) -> Item:
    return Item(value=value, version=version)


def _filled(cache: ReadCache, key: bytes = b"k", value: bytes = b"v", version: int = 5,
            shard: str = "s1", ring: int = 1) -> None:
    cache.stream_delivered(shard)
    token = cache.begin(shard)
    cache.fill(key, _item(value, version), shard, ring, token)


def test_eventual_reads_are_served_within_their_bound_strong_ones_only_when_enabled() -> None:
    cache = ReadCache(CacheConfig())
    _filled(cache)
    assert cache.lookup(b"k", cache.bound_s(True, 1_000), 1) == _item(b"v", 5)
    assert cache.bound_s(False, None) is None  # strong reads bypass by default
    assert cache.lookup(b"k", cache.bound_s(False, None), 1) is None
    strong = ReadCache(CacheConfig(strong=True, strong_staleness_ms=500))
    _filled(strong)
    assert strong.lookup(b"k", strong.bound_s(False, None), 1) is not None
    assert cache.stats().hits == 1 and cache.stats().misses == 1


def test_a_stream_that_went_quiet_stops_the_cache_serving() -> None:
    cache = ReadCache(CacheConfig())
    _filled(cache)
    cache._fresh_at["s1"] = time.monotonic() - 0.5  # last frame half a second ago
    assert cache.lookup(b"k", 0.2, 1) is None
    assert cache.lookup(b"k", 1.0, 1) is not None


def test_an_event_drops_an_older_entry_but_not_the_one_it_produced() -> None:
    cache = ReadCache(CacheConfig())
    _filled(cache, version=5)
    cache.touch(b"k", 5)  # the event of the write this entry already holds
    assert cache.lookup(b"k", 1.0, 1) is not None
    cache.touch(b"k", 6)
    assert cache.lookup(b"k", 1.0, 1) is None
    assert cache.stats().invalidations == 1


def test_a_fill_that_raced_a_change_is_dropped() -> None:
    cache = ReadCache(CacheConfig())
    cache.stream_delivered("s1")
    token = cache.begin("s1")
    cache.touch(b"k", 9)  # a write landed while the read was in flight
    cache.fill(b"k", _item(b"old", 8), "s1", 1, token)
    assert cache.lookup(b"k", 1.0, 1) is None
    assert cache.stats().fills_dropped == 1
    cache.own_write([b"k"])  # and this client's own writes count as changes too
    assert cache.begin("s1") is not None


def test_nothing_is_kept_before_the_shards_stream_delivered() -> None:
    cache = ReadCache(CacheConfig())
    assert cache.begin("s1") is None
    cache.fill(b"k", _item(b"v", 1), "s1", 1, None)
    assert cache.stats().items == 0


def test_ttl_and_ring_version_bound_what_is_served() -> None:
    cache = ReadCache(CacheConfig(ttl=0.05))
    _filled(cache, ring=1)
    assert cache.lookup(b"k", 10.0, 2) is None  # another ring: keys may have moved
    cache._entries[b"k"].read_at -= 1.0
    cache.stream_delivered("s1")
    assert cache.lookup(b"k", 10.0, 1) is None  # older than the ttl


def test_the_lru_keeps_within_its_item_and_byte_bounds() -> None:
    cache = ReadCache(CacheConfig(max_items=3, max_bytes=10_000))
    for i in range(5):
        _filled(cache, key=f"k{i}".encode(), version=i + 1)
    assert cache.lookup(b"k2", 1.0, 1) is not None  # k2 becomes the most recent
    _filled(cache, key=b"k5", version=9)
    stats = cache.stats()
    assert stats.items == 3 and stats.evictions == 3
    assert cache.lookup(b"k2", 1.0, 1) is not None and cache.lookup(b"k3", 1.0, 1) is None
    small = ReadCache(CacheConfig(max_bytes=300))
    _filled(small, key=b"a", value=b"x" * 150)
    _filled(small, key=b"b", value=b"y" * 150)
    assert small.stats().items == 1 and small.stats().bytes <= 300
    _filled(small, key=b"huge", value=b"z" * 1_000)  # bigger than the whole cache: not kept
    assert small.lookup(b"huge", 1.0, 1) is None


def test_own_write_without_keys_forgets_everything() -> None:
    cache = ReadCache(CacheConfig())
    _filled(cache)
    token = cache.begin("s1")
    cache.own_write(None)
    assert cache.stats().items == 0
    cache.fill(b"k", _item(b"v", 5), "s1", 1, token)
    assert cache.stats().items == 0 and cache.stats().fills_dropped == 1


@pytest.mark.parametrize("bad", [{"max_items": 0}, {"ttl": 0}, {"strong_staleness_ms": -1},
                                 {"progress_interval_ms": 10}])
def test_bad_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        CacheConfig(**bad)
