"""The workloads of the node benchmark (issue 2), one small definition each.

- ``get``: a read of a random key of a preloaded key space.
- ``put``: a write of a random key of the same key space (overwrites: the store does not grow
  without bound during a long run), a fresh value of ``value_size`` bytes.
- ``mix``: 90% ``get``, 10% ``put``, chosen at random per request.
- ``batch``: one atomic batch of ``batch_size`` puts per request (shardkv's ``batch`` op and
  ``POST /v1/batch``; an etcd txn of puts). Throughput is then counted in keys as well as in
  requests, to compare with single puts.

Keys are ASCII (``bench:00001234``) so that the same key works on every path, REST included.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.kv_protocol import KVClient

KEY_PREFIX = b"bench:"


def key_of(index: int) -> bytes:
    return KEY_PREFIX + b"%08d" % index


@dataclass(frozen=True, slots=True)
class Shape:
    """The data a workload works on: ``key_space`` keys, values of ``value_size`` bytes,
    ``batch_size`` puts per batch."""

    key_space: int = 10_000
    value_size: int = 256
    batch_size: int = 100


# One request of a workload: returns how many keys it touched.
Step = Callable[[KVClient, random.Random], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    description: str
    needs_preload: bool
    make_step: Callable[[Shape, bytes], Step]


def _get_step(shape: Shape, value: bytes) -> Step:
    async def step(client: KVClient, rng: random.Random) -> int:
        await client.get(key_of(rng.randrange(shape.key_space)))
        return 1

    return step


def _put_step(shape: Shape, value: bytes) -> Step:
    async def step(client: KVClient, rng: random.Random) -> int:
        await client.put(key_of(rng.randrange(shape.key_space)), value)
        return 1

    return step


def _mix_step(shape: Shape, value: bytes) -> Step:
    async def step(client: KVClient, rng: random.Random) -> int:
        key = key_of(rng.randrange(shape.key_space))
        if rng.random() < 0.9:
            await client.get(key)
        else:
            await client.put(key, value)
        return 1

    return step


def _batch_step(shape: Shape, value: bytes) -> Step:
    async def step(client: KVClient, rng: random.Random) -> int:
        indexes = rng.sample(range(shape.key_space), shape.batch_size)
        await client.put_batch([(key_of(i), value) for i in indexes])
        return shape.batch_size

    return step


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("get", "read one key (preloaded)", True, _get_step),
        Workload("put", "write one key", False, _put_step),
        Workload("mix", "90% get / 10% put", True, _mix_step),
        Workload("batch", "one atomic batch of puts", False, _batch_step),
    )
}


def value_of(shape: Shape) -> bytes:
    """A value of the workload's size: random bytes, so compression has nothing to gain."""
    return os.urandom(shape.value_size)


async def preload(client: KVClient, shape: Shape, *, in_flight: int = 8) -> None:
    """Write every key of the key space once (in batches), so that reads find what they ask
    for. Errors propagate: a benchmark of reads that miss would measure nothing."""
    value = value_of(shape)
    chunk = max(1, min(shape.batch_size, 100))
    starts = list(range(0, shape.key_space, chunk))
    gate = asyncio.Semaphore(in_flight)

    async def write(start: int) -> None:
        async with gate:
            end = min(start + chunk, shape.key_space)
            await client.put_batch([(key_of(i), value) for i in range(start, end)])

    await asyncio.gather(*(write(start) for start in starts))
