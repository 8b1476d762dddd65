"""The overwrite workload of issue 21, and the disk sampler that watches it.

Several clients overwrite a fixed key space with ``mput`` batches: the live data stays the
same size (keys x value size) while the log grows as fast as the clients write, which is
exactly the case where disk use must follow the live data and not the write history. Used by
``bench/disk_bench.py`` (minutes, by hand) and the CI test
``tests/integration/test_disk_cluster.py`` (seconds).

The sampler measures data directories from the outside (a recursive walk, like ``du
--apparent-size``), so it works the same for any version of the node, including one without
``/v1/disk``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class OverwriteSpec:
    keys: int = 20_000
    value_bytes: int = 200
    batch: int = 50
    clients: int = 4
    seconds: float = 60.0

    @property
    def live_bytes(self) -> int:
        """Keys and values the store holds once every key was written (keys are
        ``ow-%06d``, 9 bytes)."""
        return self.keys * (self.value_bytes + 9)


@dataclass
class OverwriteResult:
    batches: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def puts_per_s(self, spec: OverwriteSpec) -> float:
        return self.batches * spec.batch / self.seconds if self.seconds else 0.0


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file under ``path`` (0 if it is gone)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue  # removed while we walked (a trimmed segment)
    return total


async def overwrite(
    mput: Callable[[dict[str, bytes]], Any],
    spec: OverwriteSpec,
    *,
    stop: asyncio.Event | None = None,
) -> OverwriteResult:
    """Run ``spec.clients`` writers, each sending ``mput`` batches of ``spec.batch``
    consecutive keys at a random offset, for ``spec.seconds`` (or until ``stop``). Errors are
    counted by type and the writer carries on (a member being down must not stop the load)."""
    result = OverwriteResult()
    stop = stop or asyncio.Event()
    rng = random.Random(21)
    values = [rng.randbytes(spec.value_bytes // 2).hex().encode().ljust(spec.value_bytes, b"v")
              for _ in range(256)]  # hex: as compressible as text, not as a run of one byte
    deadline = time.monotonic() + spec.seconds

    async def writer(worker: int) -> None:
        local = random.Random(worker)
        while not stop.is_set() and time.monotonic() < deadline:
            start = local.randrange(0, spec.keys - spec.batch + 1)
            items = {f"ow-{k:06d}": values[local.randrange(256)]
                     for k in range(start, start + spec.batch)}
            try:
                await mput(items)
            except Exception as exc:  # counted, not fatal: the load goes on
                name = type(exc).__name__
                result.errors[name] = result.errors.get(name, 0) + 1
                await asyncio.sleep(0.05)
                continue
            result.batches += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(w) for w in range(spec.clients)))
    result.seconds = time.monotonic() - started
    return result


async def sample_disk(
    directories: dict[str, Path], interval_s: float, stop: asyncio.Event
) -> list[dict[str, Any]]:
    """Every ``interval_s`` until ``stop``: ``{"t": seconds, member: bytes, ...}``."""
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    while True:
        sizes = await asyncio.to_thread(
            lambda: {name: tree_bytes(path) for name, path in directories.items()})
        samples.append({"t": round(time.monotonic() - started, 2), **sizes})
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
            return samples
        except TimeoutError:
            continue
