"""The four workloads, one operation at a time: each ``step`` picks an operation from the
seeded generator, runs it through the recorder, and learns from what it saw.

=============  ==============================  =========================================
workload       keys                            operations
=============  ==============================  =========================================
register       ``reg-0..N``                    strong read, write of a unique value,
                                               compare-and-swap (``put(if_version=)``)
append         ``app-0..N`` (rotated after     append of a unique element (a JSON list
               200 appends: ``app-0-g3``)      grown by compare-and-swap), strong read
eventual       the register keys               ``get(consistency="eventual",
                                               max_staleness_ms=B)``
counter        ``ctr-0..N``                    ``incr(delta)``, strong read
=============  ==============================  =========================================

Values are text, unique per run (``"<process>-<n>"``), so a read names the write it saw.
A key's final strong read (``final_read``) decodes the stored bytes the same way the
workload's reads do, so the checkers compare like with like.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shardkv.chaos.workloads.recorder import Outcome, Process, Recorder
from shardkv.client import Client, Item, NotFound
from shardkv.cluster.limits import as_key


def decode_text(item: Item | None) -> Outcome:
    if item is None:
        return Outcome(None, None)
    return Outcome(item.value.decode("utf-8", "replace"), item.version)


def decode_list(item: Item | None) -> Outcome:
    if item is None:
        return Outcome([], None)
    return Outcome(list(json.loads(item.value)), item.version)


def decode_count(item: Item | None) -> Outcome:
    if item is None:
        return Outcome(0, None)
    return Outcome(int(item.value), item.version)


async def routed_get(
    client: Client, key: str, *, budget_s: float, consistency: str = "strong",
    max_staleness_ms: int | None = None, names: dict[str, str] | None = None,
    anywhere: bool = False,
) -> tuple[Item | None, str | None]:
    """``client.get`` that also says which member answered (its node id from ``names``, a
    URL otherwise): the last route the executor tried is the one that answered. A stale
    eventual read is then traced to a node, not only to a time. ``anywhere`` routes a strong
    read as an eventual one (to any member; a replica redirects it to the primary unless it
    runs the ``replica-strong-reads`` negative control)."""
    served: list[str] = []
    args, eventual = client._read_args(consistency, max_staleness_ms, None)
    raw = as_key(key)
    args["key"] = raw
    try:
        body = await client._executor.call("get", args, keys=[raw], eventual=eventual or anywhere,
                                           budget=budget_s,
                                           on_route=lambda route: served.append(route.url))
    except NotFound:
        body = None
    url = served[-1] if served else None
    node = (names or {}).get(url or "", url)
    return (None if body is None else Item.from_wire(body)), node


class Workload(Protocol):
    name: str
    model: str  # the linearizability model of its keys (a name of chaos.models.MODELS)

    def keys(self) -> list[str]: ...

    def decode(self, item: Item | None) -> Outcome: ...

    async def step(self, client: Client, process: Process, rng: random.Random) -> None: ...


@dataclass
class Context:
    """What the workloads share within a run: the recorder, a unique-value source and the
    per-call timeout (short, so a partition turns into info operations quickly)."""

    recorder: Recorder
    timeout: float = 2.0
    names: dict[str, str] = field(default_factory=dict)  # member URL -> node id
    strong_reads_anywhere: bool = False  # see WorkloadMix.strong_reads_anywhere
    _serial: itertools.count = field(default_factory=itertools.count)

    def unique(self, process: Process) -> str:
        return f"{process.id}-{next(self._serial)}"


class RegisterWorkload:
    """Linearizable registers: reads, unique writes, and CAS at the last version seen."""

    name = "register"
    model = "versioned-register"

    def __init__(self, ctx: Context, *, key_count: int = 3, prefix: str = "reg") -> None:
        self.ctx = ctx
        self._keys = [f"{prefix}-{i}" for i in range(key_count)]
        self.last_version: dict[str, int] = {}

    def keys(self) -> list[str]:
        return list(self._keys)

    def decode(self, item: Item | None) -> Outcome:
        return decode_text(item)

    async def step(self, client: Client, process: Process, rng: random.Random) -> None:
        key = rng.choice(self._keys)
        roll = rng.random()
        timeout = self.ctx.timeout
        rec = self.ctx.recorder
        if roll < 0.5:
            async def read() -> Outcome:
                item, node = await routed_get(client, key, budget_s=timeout,
                                              names=self.ctx.names,
                                              anywhere=self.ctx.strong_reads_anywhere)
                return replace(decode_text(item), node=node)

            seen = await rec.record(process, "read", key, None, read, model=self.model,
                             consistency="strong")
            if seen is not None and seen.version is not None:
                self._learn(key, seen.version)
            return
        value = self.ctx.unique(process)
        expected = self.last_version.get(key)
        if roll < 0.75 or expected is None:
            async def write() -> Outcome:
                return Outcome(None, await client.put(key, value, timeout=timeout))

            done = await rec.record(process, "write", key, value, write, model=self.model)
        else:
            async def cas() -> Outcome:
                version = await client.put(key, value, if_version=expected, timeout=timeout)
                return Outcome(None, version)

            done = await rec.record(process, "cas", key, [expected, value], cas,
                                  model=self.model)
        if done is not None and done.version is not None:
            self._learn(key, done.version)

    def _learn(self, key: str, version: int) -> None:
        if version > self.last_version.get(key, 0):
            self.last_version[key] = version


class AppendWorkload:
    """Unique appends to a few lists, each a compare-and-swap loop over a JSON list
    (``Client.update``): every acknowledged element must be in the final list, once.

    A list is retired after ``max_elements`` appends were attempted on it and a fresh key takes
    its slot (Jepsen's list-append rotates keys the same way): every read returns the whole
    list, so unbounded lists would make the history, the check and the CAS values grow
    quadratically with the run's length. Retired keys still get their final read."""

    name = "append"
    model = "append"

    def __init__(self, ctx: Context, *, key_count: int = 2, prefix: str = "app",
                 max_elements: int = 200) -> None:
        self.ctx = ctx
        self.prefix = prefix
        self.max_elements = max_elements
        self._slots = [f"{prefix}-{i}" for i in range(key_count)]
        self._all = list(self._slots)
        self._attempts: dict[str, int] = {}
        self._generation = itertools.count(1)

    def keys(self) -> list[str]:
        return list(self._all)

    def decode(self, item: Item | None) -> Outcome:
        return decode_list(item)

    def _key_for_append(self, rng: random.Random) -> str:
        slot = rng.randrange(len(self._slots))
        key = self._slots[slot]
        self._attempts[key] = self._attempts.get(key, 0) + 1
        if self._attempts[key] >= self.max_elements:
            fresh = f"{self.prefix}-{slot}-g{next(self._generation)}"
            self._slots[slot] = fresh
            self._all.append(fresh)
        return key

    async def step(self, client: Client, process: Process, rng: random.Random) -> None:
        if rng.random() >= 0.25:
            await self._append(client, process, self._key_for_append(rng))
            return
        key = rng.choice(self._slots)
        timeout = self.ctx.timeout

        async def read() -> Outcome:
            item, node = await routed_get(client, key, budget_s=timeout, names=self.ctx.names)
            return replace(decode_list(item), node=node)

        await self.ctx.recorder.record(process, "read", key, None, read, model=self.model,
                                       consistency="strong")

    async def _append(self, client: Client, process: Process, key: str) -> None:
        timeout = self.ctx.timeout
        rec = self.ctx.recorder
        element = self.ctx.unique(process)

        def grow(item: Item | None) -> bytes:
            elements: list[Any] = [] if item is None else json.loads(item.value)
            return json.dumps([*elements, element], separators=(",", ":")).encode()

        async def append() -> Outcome:
            item = await client.update(key, grow, timeout=timeout)
            return Outcome(None, None if item is None else item.version)

        await rec.record(process, "append", key, element, append, model=self.model)


class EventualReadWorkload:
    """Replica reads of the register keys with a staleness bound (checked for staleness,
    not linearizability)."""

    name = "eventual"
    model = "versioned-register"  # the register keys (eventual reads: staleness only)

    def __init__(self, ctx: Context, registers: RegisterWorkload, *,
                 bound_ms: int = 1000) -> None:
        self.ctx = ctx
        self.registers = registers
        self.bound_ms = bound_ms

    def keys(self) -> list[str]:
        return []  # the register workload reads them finally

    def decode(self, item: Item | None) -> Outcome:
        return decode_text(item)

    async def step(self, client: Client, process: Process, rng: random.Random) -> None:
        key = rng.choice(self.registers.keys())
        timeout = self.ctx.timeout
        bound = self.bound_ms

        async def read() -> Outcome:
            item, node = await routed_get(client, key, budget_s=timeout, consistency="eventual",
                                          max_staleness_ms=bound, names=self.ctx.names)
            return replace(decode_text(item), node=node)

        await self.ctx.recorder.record(process, "read", key, None, read, model=self.model,
                                       consistency="eventual", max_staleness_ms=bound)


class CounterWorkload:
    """``incr`` with small positive deltas and strong reads: no increment lost or doubled."""

    name = "counter"
    model = "counter"

    def __init__(self, ctx: Context, *, key_count: int = 2, prefix: str = "ctr") -> None:
        self.ctx = ctx
        self._keys = [f"{prefix}-{i}" for i in range(key_count)]

    def keys(self) -> list[str]:
        return list(self._keys)

    def decode(self, item: Item | None) -> Outcome:
        return decode_count(item)

    async def step(self, client: Client, process: Process, rng: random.Random) -> None:
        key = rng.choice(self._keys)
        timeout = self.ctx.timeout
        rec = self.ctx.recorder
        if rng.random() < 0.2:
            async def read() -> Outcome:
                item, node = await routed_get(client, key, budget_s=timeout,
                                              names=self.ctx.names)
                return replace(decode_count(item), node=node)

            await rec.record(process, "read", key, None, read, model=self.model,
                             consistency="strong")
            return
        delta = rng.randint(1, 3)

        async def incr() -> Outcome:
            return Outcome(await client.incr(key, delta, timeout=timeout), None)

        await rec.record(process, "incr", key, delta, incr, model=self.model)
