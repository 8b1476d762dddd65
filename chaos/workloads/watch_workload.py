"""The watch workload: unique writes to a few keys while one key watch follows them all.

Keys ``wat-0..N``. A worker writes a unique value to one of them (recorded in the history
like a register write, so its keys are also checked for linearizability and lost writes);
one watch of the prefix ``wat-`` (``Client.watch(prefix=..., progress=True)`` on the
workload client, started before the first write) records every event it receives. After
the run, ``finish`` waits until the watch has delivered every acknowledged write (bounded by
``CATCH_UP_S``), stops it, and checks the
events against the writes with ``check_watch_events`` (chaos/checkers/watch_events.py):
every acknowledged write delivered exactly once, per key in version order, nothing that no
write explains (a migration's copy or clean-up would be). Writes of unknown outcome may or
may not appear.

The watch resumes by itself across dropped connections, failovers and resharding
(client/key_watch.py, docs/watch.md); that is what this checks under faults and in the
``reshard`` scenarios. A write is matched by key and version (the shard recorded is the
client's guess before the write: a flip may send it elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.checkers.watch_events import (
    ReceivedEvent,
    WatchedWrite,
    check_watch_events,
)
from shardkv.chaos.workloads.kinds import Context, decode_text
from shardkv.chaos.workloads.recorder import Outcome, Process, classify_error
from shardkv.client import Client, Item
from shardkv.cluster.limits import as_key

PREFIX = "wat-"
START_WAIT_S = 10.0
CATCH_UP_S = 30.0


class WatchWorkload:
    name = "watch"
    model = "versioned-register"

    def __init__(self, ctx: Context, *, key_count: int = 4) -> None:
        self.ctx = ctx
        self._keys = [f"{PREFIX}{i}" for i in range(key_count)]
        self.writes: list[WatchedWrite] = []
        self.events: list[ReceivedEvent] = []
        self._caught_up: dict[str, int] = {}  # shard -> version the watch has delivered to
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._delivered = asyncio.Event()  # set at every frame the watch delivers
        self._seen: set[tuple[bytes, int]] = set()  # (key, version) of every event
        self._shards: list[str] = []
        self.watch_error: str | None = None

    def keys(self) -> list[str]:
        return list(self._keys)

    def decode(self, item: Item | None) -> Outcome:
        return decode_text(item)

    async def _follow(self, client: Client) -> None:
        try:
            async for event in client.watch(prefix=PREFIX, progress=True):
                shard = event.shard
                self._caught_up[shard] = max(self._caught_up.get(shard, 0), event.version)
                self._delivered.set()
                if event.type != "progress" and event.key is not None:
                    self.events.append(ReceivedEvent(event.key, event.value, event.version,
                                                     shard, event.type))
                    self._seen.add((event.key, event.version))
                # Ready once every shard confirmed the subscription (a progress mark each;
                # a client talking to one node directly names its shard otherwise).
                if not self._ready.is_set() and len(self._caught_up) >= len(self._shards):
                    self._ready.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the check will show what it missed; say why here
            self.watch_error = f"{type(exc).__name__}: {exc}"

    async def _watching(self, client: Client) -> bool:
        if self._task is None:
            cmap = client.router.map
            # The watch follows the ring's shards (a shard a migration is still filling
            # joins at the flip).
            self._shards = (sorted(cmap.ring.shards) if cmap is not None and cmap.ring.shards
                            else client.router.shards())
            self._task = asyncio.create_task(self._follow(client), name="chaos-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), START_WAIT_S)
        return self._ready.is_set()

    async def step(self, client: Client, process: Process, rng: random.Random) -> None:
        if not await self._watching(client):
            return  # no write before the watch is open: it could not be expected to see it
        key = rng.choice(self._keys)
        value = self.ctx.unique(process)
        shard = (next(iter(self._caught_up)) if client.router.direct
                 else client.router.shard_of(as_key(key)))  # as the watch's events name it
        failure: list[BaseException] = []

        async def write() -> Outcome:
            try:
                return Outcome(None, await client.put(key, value, timeout=self.ctx.timeout))
            except Exception as exc:
                failure.append(exc)
                raise

        try:
            done = await self.ctx.recorder.record(process, "write", key, value, write,
                                                  model=self.model)
        except asyncio.CancelledError:
            self.writes.append(WatchedWrite(key.encode(), value.encode(), shard, None))
            raise
        if done is not None:
            self.writes.append(WatchedWrite(key.encode(), value.encode(), shard, done.version))
        elif failure and classify_error(failure[0], read=False) == "info":
            self.writes.append(WatchedWrite(key.encode(), value.encode(), shard, None))

    async def finish(self) -> CheckResult:
        """After the workers stopped: let the watch catch up, stop it, check it."""
        started = time.monotonic()
        wanted = {(w.key, w.version) for w in self.writes if w.version is not None}
        while not wanted <= self._seen and self.watch_error is None and \
                self._task is not None and not self._task.done():
            remaining = CATCH_UP_S - (time.monotonic() - started)
            if remaining <= 0:
                break
            self._delivered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._delivered.wait(), remaining)
        caught_up_s = round(time.monotonic() - started, 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        result = check_watch_events(self.writes, self.events)
        stats: dict[str, Any] = dict(result.stats)
        stats.update(writes=len(self.writes),
                     unknown_outcome=sum(w.version is None for w in self.writes),
                     catch_up_s=caught_up_s, watch_error=self.watch_error)
        result.stats = stats
        if not self.writes:
            result.unknown("no-writes", None, "the watch was never open long enough to write")
        return result
