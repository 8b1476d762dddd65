"""A steady write load for restart experiments: N clients putting their own keys in a loop.

Each client writes ``w<client>:<seq>`` keys one after another and remembers the latest value
it had acknowledged for each, so that afterwards ``verify`` can read every acknowledged key
back (nothing lost). Every put's latency is recorded with the moment it started, so a caller
can look at the puts that overlapped a restart (``window``). Used by
``bench/rolling_restart_bench.py`` and ``tests/integration/test_rolling_restart.py``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from shardkv.client import Client
from shardkv.cluster.errors import ShardKVError

KEYS_PER_CLIENT = 64  # keys are rewritten in a cycle: reads back stay cheap


@dataclass
class WriteLoad:
    coordinators: list[str]
    clients: int = 16
    # Off for a cluster with nodes from before client sessions (docs/exactly-once.md: upgrade
    # the nodes before the clients): such a node refuses the session stamp.
    exactly_once: bool = True
    samples: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    acknowledged: dict[bytes, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _kv: Client | None = None

    async def start(self) -> None:
        self._kv = Client(self.coordinators, pool_size=2, exactly_once=self.exactly_once)
        await self._kv.__aenter__()
        self._tasks = [asyncio.create_task(self._writer(i)) for i in range(self.clients)]

    async def _writer(self, index: int) -> None:
        assert self._kv is not None
        seq = 0
        while not self._stop.is_set():
            key = f"w{index}:{seq % KEYS_PER_CLIENT}".encode()
            value = f"{index}:{seq}".encode()
            started = time.monotonic()
            try:
                await self._kv.put(key, value)
            except ShardKVError as exc:  # the client's retries ran out: report, keep going
                self.errors.append(f"{key!r}: {exc.code.value}: {exc}")
                seq += 1
                continue
            self.samples.append((started, time.monotonic() - started))
            self.acknowledged[key] = value
            seq += 1

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def verify(self) -> list[str]:
        """Read every acknowledged key back; the keys whose value is not the last one
        acknowledged (a lost write)."""
        assert self._kv is not None
        lost = []
        for key, value in sorted(self.acknowledged.items()):
            item = await self._kv.get(key)
            got = getattr(item, "value", item)
            if got != value:
                lost.append(f"{key!r}: acknowledged {value!r}, read {got!r}")
        return lost

    async def close(self) -> None:
        if self._kv is not None:
            await self._kv.__aexit__(None, None, None)
            self._kv = None

    def window(self, since: float, until: float) -> list[float]:
        """Latencies (s) of the puts that were in flight at some point in [since, until]."""
        return [d for s, d in self.samples if s <= until and s + d >= since]


def latency_summary(latencies: list[float]) -> dict[str, float | int]:
    """max and p99 in ms (0 for no samples)."""
    if not latencies:
        return {"puts": 0, "max_ms": 0.0, "p99_ms": 0.0}
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"puts": len(ordered), "max_ms": round(ordered[-1] * 1000, 1),
            "p99_ms": round(p99 * 1000, 1)}
