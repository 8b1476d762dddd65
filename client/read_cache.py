"""The client's read-through cache: ``Client(cache=CacheConfig(...))`` (docs/client-cache.md).

A bounded LRU of the items strong ``get``s returned, kept fresh by a watch of every shard
(``cache_stream.py``, ``values=False`` with progress marks), and dropped on the client's own
writes. What may be served from it is decided per read:

- **the staleness bound**: an entry is no older than the last frame (an event or a progress
  mark) its shard's watch delivered, since every later write of the shard would have
  arrived as an event and dropped it. An ``eventual`` read with ``max_staleness_ms=B`` is
  served when that frame arrived within B ms; a ``strong`` read only when
  ``CacheConfig.strong`` is on and the frame arrived within ``strong_staleness_ms`` (the
  stream is connected and caught up). Otherwise the read goes to the node, as without a
  cache;
- **the TTL**: no entry is served ``ttl`` seconds after it was read, whatever the stream
  says (a safety net against a stream that is stuck without anyone noticing);
- **the ring**: entries of another ring version are never served (a resharding moves keys
  between shards, and the watch follows the shards of the map it started with).

Fills come from strong reads only: a cacheable read that misses reads through from the
primary (a replica's answer may be older than a write this client just made), and a fill is
dropped when the key changed after the read began in a way the answer may not include (a
write of this client, or an event of a newer version): a slow read never puts back a value
that was already replaced. Only present keys are cached (a miss is not remembered).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from shardkv.client.routing import Router
    from shardkv.client.values import Item

ENTRY_OVERHEAD = 96  # bytes per entry beyond key and value, for max_bytes
TOUCHED_LIMIT = 65_536  # keys whose recent changes are remembered
TOUCHES_PER_KEY = 8


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """``max_items`` and ``max_bytes`` bound the LRU; ``ttl`` (seconds) bounds an entry's
    age; ``strong`` lets strong reads use the cache while the shard's invalidation stream
    has delivered a frame within ``strong_staleness_ms`` (off by default: a cached strong
    read is not linearizable, only that fresh); ``progress_interval_ms`` is how often the
    nodes confirm an idle stream is caught up."""

    max_items: int = 10_000
    max_bytes: int = 64 << 20
    ttl: float = 30.0
    strong: bool = False
    strong_staleness_ms: int = 200
    progress_interval_ms: int = 100

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_bytes < 1:
            raise ValueError("max_items and max_bytes must be at least 1")
        if not self.ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        if self.strong_staleness_ms < 0:
            raise ValueError("strong_staleness_ms must not be negative")
        if not 50 <= self.progress_interval_ms <= 600_000:
            raise ValueError("progress_interval_ms must be from 50 to 600000")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of the counters (``client.cache.stats()``)."""

    hits: int
    misses: int
    evictions: int
    invalidations: int
    fills_dropped: int
    items: int
    bytes: int

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass(slots=True)
class _Entry:
    item: Item
    shard: str
    ring_version: int
    read_at: float
    size: int


class ReadCache:
    """The LRU and its freshness bookkeeping. Runs on the client's event loop only."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._clock = 0  # counts touches; a fill is dropped when its key was touched later
        # key -> recent touches (clock, version; None: a write of this client), newest last
        self._touched: OrderedDict[bytes, list[tuple[int, int | None]]] = OrderedDict()
        self._touched_floor = 0  # the largest clock value forgotten from _touched
        self._fresh_at: dict[str, float] = {}  # shard -> when its stream last delivered
        self.hits = self.misses = self.evictions = self.invalidations = 0
        self.fills_dropped = 0

    # -- reads ---------------------------------------------------------------------------

    def bound_s(self, eventual: bool, max_staleness_ms: int | None) -> float | None:
        """How fresh the shard's stream must be for this read; None: not from the cache."""
        if eventual:
            return (max_staleness_ms / 1000 if max_staleness_ms is not None
                    else self.config.ttl)
        return self.config.strong_staleness_ms / 1000 if self.config.strong else None

    def lookup(self, key: bytes, bound_s: float | None, ring_version: int) -> Item | None:
        entry = self._entries.get(key)
        now = time.monotonic()
        if (entry is None or bound_s is None or entry.ring_version != ring_version
                or now - entry.read_at > self.config.ttl
                or (entry.item.expires_at is not None and time.time() >= entry.item.expires_at)
                or now - self._fresh_at.get(entry.shard, -1e18) > bound_s):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.item

    def read_through(self, router: Router, key: bytes, eventual: bool,
                     max_staleness_ms: int | None,
                     ) -> tuple[Item | None, Callable[[Item], None] | None]:
        """A cached item for this read, or (None, what to call with the answer of a
        strong read): a miss reads through from the primary, whatever consistency was asked
        for, since only the primary's answer is known to include this client's writes."""
        ring = router.map.ring.version if router.map is not None else 0
        bound = self.bound_s(eventual, max_staleness_ms)
        hit = self.lookup(key, bound, ring)
        if hit is not None or bound is None:
            return hit, None
        shard = router.shard_of(key)
        token = self.begin(shard)
        if token is None:
            return None, None
        return None, lambda item: self.fill(key, item, shard, ring, token)

    def begin(self, shard: str) -> int | None:
        """A fill token for a strong read about to start; None when the shard's stream
        is not up yet (its events would be missed, so nothing read now may be kept)."""
        return self._clock if shard in self._fresh_at else None

    def fill(self, key: bytes, item: Item, shard: str, ring_version: int,
             token: int | None) -> None:
        if token is None:
            return
        touches = self._touched.get(key)
        if touches is None:
            raced = self._touched_floor > token  # forgotten: assume the worst
        else:
            # A change the read may not have seen: this client's write, or an event newer
            # than what the read returned (an event it already includes is no race).
            raced = (touches[0][0] > token and len(touches) == TOUCHES_PER_KEY) or any(
                clock > token and (version is None or version > item.version)
                for clock, version in touches)
        if raced:
            self.fills_dropped += 1
            return
        self._drop(key)
        size = len(key) + len(item.value) + ENTRY_OVERHEAD
        if size > self.config.max_bytes:
            return
        self._entries[key] = _Entry(item, shard, ring_version, time.monotonic(), size)
        self._bytes += size
        while len(self._entries) > self.config.max_items or self._bytes > self.config.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size
            self.evictions += 1

    # -- invalidation --------------------------------------------------------------------

    def touch(self, key: bytes, version: int | None = None) -> None:
        """``key`` changed (an event of ``version``; None: this client is writing it)."""
        self._clock += 1
        touches = self._touched.setdefault(key, [])
        touches.append((self._clock, version))
        if len(touches) > TOUCHES_PER_KEY:
            del touches[0]  # a fill older than every touch kept is refused (above)
        self._touched.move_to_end(key)
        if len(self._touched) > TOUCHED_LIMIT:
            _, forgotten = self._touched.popitem(last=False)
            self._touched_floor = max(self._touched_floor, forgotten[-1][0])
        entry = self._entries.get(key)
        if entry is not None and (version is None or version > entry.item.version):
            self._drop(key)
            self.invalidations += 1

    def own_write(self, keys: Sequence[bytes] | None) -> None:
        """This client is writing ``keys`` (None: keys unknown)."""
        if keys is None:
            self.touch_all()
        else:
            for key in keys:
                self.touch(key)

    def touch_all(self) -> None:
        """Something changed that cannot be pinned to keys: forget everything."""
        self._clock += 1
        self._touched.clear()
        self._touched_floor = self._clock
        self.invalidations += len(self._entries)
        self._entries.clear()
        self._bytes = 0

    def stream_delivered(self, shard: str) -> None:
        """The shard's stream delivered a frame: it was caught up a moment ago."""
        self._fresh_at[shard] = time.monotonic()

    def stream_restarted(self) -> None:
        """The stream is starting over (a new ring): nothing is fresh until it delivers."""
        self._fresh_at.clear()
        self.touch_all()

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.evictions, self.invalidations,
                          self.fills_dropped, len(self._entries), self._bytes)
