"""A write load for resharding tests and the chaos scenario: puts, compare-and-swaps and
increments from many concurrent clients (coroutines on one Client), with readers that check
per-key versions never go backward, and a final check of every acknowledged write.

Accounting: a write that was acknowledged is "acked"; one that failed with any error may or
may not have been applied ("maybe"). The final value of a put key must be its last acked
value or a maybe value written after it; a counter must lie between its acked increments and
acked + maybe; a CAS register (an integer bumped by CAS) likewise.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from shardkv.client import Client, VersionMismatch


@dataclass
class KeyHistory:
    acked: bytes | None = None
    after_ack: list[bytes] = field(default_factory=list)


@dataclass
class ReshardLoad:
    client: Client
    put_workers: int = 6
    cas_workers: int = 4
    incr_workers: int = 4
    readers: int = 2
    keys_per_worker: int = 30
    puts: dict[str, KeyHistory] = field(default_factory=dict)
    cas: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (acked, maybe)
    counters: dict[str, tuple[int, int]] = field(default_factory=dict)
    last_version: dict[tuple[str, str], int] = field(default_factory=dict)
    backward: list[str] = field(default_factory=list)
    ops: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, str] = field(default_factory=dict)  # kind -> its first message
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for w in range(self.put_workers):
            self._tasks.append(asyncio.create_task(self._put_worker(w)))
        for w in range(self.cas_workers):
            self._tasks.append(asyncio.create_task(self._cas_worker(w)))
        for w in range(self.incr_workers):
            self._tasks.append(asyncio.create_task(self._incr_worker(w)))
        for w in range(self.readers):
            self._tasks.append(asyncio.create_task(self._reader(w)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def _error(self, exc: BaseException) -> None:
        self.errors += 1
        name = type(exc).__name__
        self.error_kinds[name] = self.error_kinds.get(name, 0) + 1
        self.error_samples.setdefault(name, str(exc)[:300])

    def _seen(self, key: str, version: int | None, observer: str) -> None:
        """Per observer (one sequential worker), the versions of a key never go backward:
        each of its requests starts after the previous one was answered."""
        if version is None:
            return
        last = self.last_version.get((observer, key), 0)
        if version < last:
            self.backward.append(f"{key}: {observer} saw version {version} after {last}")
        self.last_version[(observer, key)] = max(last, version)

    async def _put_worker(self, w: int) -> None:
        rng = random.Random(w)
        seq = 0
        while not self._stop.is_set():
            key = f"put:{w}:{rng.randrange(self.keys_per_worker)}"
            seq += 1
            value = f"{w}:{seq}".encode()
            history = self.puts.setdefault(key, KeyHistory())
            try:
                self._seen(key, await self.client.put(key, value,
                                                      ttl=3600 if seq % 7 == 0 else None),
                           f"put{w}")
            except Exception as exc:
                self._error(exc)
                history.after_ack.append(value)
                await asyncio.sleep(0.01)
                continue
            history.acked, history.after_ack = value, []
            self.ops += 1

    async def _cas_worker(self, w: int) -> None:
        key = f"cas:{w}"
        while not self._stop.is_set():
            acked, maybe = self.cas.get(key, (0, 0))
            try:
                item = await self.client.get(key)
                current = int(item.value) if item else 0
                if item:
                    self._seen(key, item.version, f"cas{w}")
                version = await self.client.put(key, str(current + 1).encode(),
                                                if_version=item.version if item else None,
                                                if_absent=item is None)
                self._seen(key, version, f"cas{w}")
            except VersionMismatch:
                continue
            except Exception as exc:
                self._error(exc)
                self.cas[key] = (acked, maybe + 1)
                await asyncio.sleep(0.01)
                continue
            self.cas[key] = (max(acked, current + 1), maybe)
            self.ops += 1

    async def _incr_worker(self, w: int) -> None:
        key = f"ctr:{w}"
        while not self._stop.is_set():
            acked, maybe = self.counters.get(key, (0, 0))
            try:
                await self.client.incr(key, 1)
            except Exception as exc:
                self._error(exc)
                self.counters[key] = (acked, maybe + 1)
                await asyncio.sleep(0.01)
                continue
            self.counters[key] = (acked + 1, maybe)
            self.ops += 1

    async def _reader(self, w: int) -> None:
        rng = random.Random(100 + w)
        while not self._stop.is_set():
            key = f"put:{rng.randrange(self.put_workers)}:{rng.randrange(self.keys_per_worker)}"
            try:
                item = await self.client.get(key)
            except Exception as exc:
                self._error(exc)
                await asyncio.sleep(0.01)
                continue
            if item is not None:
                self._seen(key, item.version, f"reader{w}")

    async def check(self, client: Client) -> list[str]:
        """Every acknowledged write readable with an allowed value; [] when all is well."""
        problems = list(self.backward)
        for key, history in sorted(self.puts.items()):
            item = await client.get(key)
            allowed = ([history.acked] if history.acked is not None else [None]) + \
                history.after_ack
            got = None if item is None else item.value
            if got not in allowed:
                problems.append(f"{key}: read {got!r}, expected one of {allowed!r}")
        for table in (self.cas, self.counters):
            for key, (acked, maybe) in sorted(table.items()):
                item = await client.get(key)
                got = 0 if item is None else int(item.value)
                if not acked <= got <= acked + maybe:
                    problems.append(f"{key}: {got} outside [{acked}, {acked + maybe}]")
        return problems
