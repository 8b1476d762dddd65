"""The load generator: several client processes, each with its own event loop and
connections, together keeping ``concurrency`` requests in flight for a fixed time.

Why processes: one Python process saturates one core well below what a server can take, and
then the benchmark measures the generator. Each process opens its own client
(``Target.connect``) and runs its share of the concurrency as closed-loop workers (a worker
sends its next request when the previous one is answered). All processes start measuring at
the same instant (CLOCK_MONOTONIC is system-wide) after a warm-up, and stop issuing requests at
the same instant; a request is counted if it was sent inside the window.

Besides throughput and latency, a run reports the CPU the generator used (its processes'
``getrusage`` over the window) next to the CPU the server used (``/proc/<pid>/stat``), so that
a reader can tell a server bottleneck from a generator one on a small shared machine.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import os
import random
import resource
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from bench.forked_workers import WorkerError, expect, forked_workers
from bench.kv_protocol import RequestFailed, Target
from bench.proc_stats import Pids, first_pid, group_cpu_seconds, process_rss_bytes
from bench.workloads import WORKLOADS, Shape, value_of

# How long the generator waits past the end of the window for requests still in flight
# before it cancels them: a run always stops by itself.
DRAIN_TIMEOUT_S = 15.0
# Time allowed for the processes to start and connect.
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One cell of the benchmark: a target, a workload, a concurrency, for a duration."""

    target: Target
    workload: str
    concurrency: int
    duration_s: float
    warmup_s: float = 0.5
    shape: Shape = field(default_factory=Shape)
    processes: int = 0  # 0: as many as cores, never more than the concurrency

    def process_count(self) -> int:
        wanted = self.processes or (os.cpu_count() or 1)
        return max(1, min(wanted, self.concurrency))

    def shares(self) -> list[int]:
        """The concurrency of each process, as even as possible."""
        count = self.process_count()
        base, extra = divmod(self.concurrency, count)
        return [base + (1 if i < extra else 0) for i in range(count)]


@dataclass(slots=True)
class LoadResult:
    """What a run measured. Latencies are per request, in milliseconds."""

    system: str
    variant: str
    kind: str
    workload: str
    concurrency: int
    processes: int
    duration_s: float
    requests: int
    keys: int
    errors: int
    error_codes: dict[str, int]
    requests_per_s: float
    keys_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    generator_cpu_cores: float
    server_cpu_cores: float | None
    server_rss_bytes: int | None
    # The server's own figures over the cell (bench.server_metrics): fsyncs, mean fsync, ...
    server_metrics: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoadError(WorkerError):
    """The generator could not run (a process failed to connect or died)."""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_load(spec: LoadSpec, *, server_pid: Pids | None = None, seed: int = 0) -> LoadResult:
    """Run one cell and return its measurements. Blocks for about warmup + duration."""
    if spec.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {spec.workload!r}")
    if spec.concurrency < 1 or spec.duration_s <= 0:
        raise ValueError("concurrency must be >= 1 and duration > 0")
    arguments = [(spec, share, seed * 1000 + index) for index, share in enumerate(spec.shares())]
    with forked_workers(_generator_main, arguments, "loadgen") as channels:
        for channel in channels:
            _expect(channel, "ready", CONNECT_TIMEOUT_S)
        window_start = time.monotonic() + spec.warmup_s
        window_end = window_start + spec.duration_s
        for channel in channels:
            channel.send(("go", window_start, window_end))
        server_cpu, server_rss = _watch_server(server_pid, window_start, window_end)
        reports = [
            _expect(channel, "done", spec.duration_s + spec.warmup_s + DRAIN_TIMEOUT_S + 10)
            for channel in channels
        ]
    return _combine(spec, reports, server_cpu, server_rss)


def _expect(channel: Connection, kind: str, timeout_s: float) -> dict[str, Any]:
    return expect(channel, kind, timeout_s, who="a generator process", error=LoadError) or {}


def _watch_server(
    pid: Pids | None, window_start: float, window_end: float
) -> tuple[float | None, int | None]:
    """The server's CPU (cores used on average) over the window, and its RSS at the end."""
    time.sleep(max(0.0, window_start - time.monotonic()))
    if pid is None:
        time.sleep(max(0.0, window_end - time.monotonic()))
        return None, None
    try:
        cpu_before, wall_before = group_cpu_seconds(pid), time.monotonic()
        time.sleep(max(0.0, window_end - time.monotonic()))
        cpu_after, wall_after = group_cpu_seconds(pid), time.monotonic()
        rss = process_rss_bytes(first_pid(pid))
    except (OSError, ValueError):
        return None, None
    return (cpu_after - cpu_before) / max(wall_after - wall_before, 1e-9), rss


def _combine(
    spec: LoadSpec,
    reports: list[dict[str, Any]],
    server_cpu: float | None,
    server_rss: int | None,
) -> LoadResult:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    requests = keys = 0
    cpu_seconds = 0.0
    for report in reports:
        chunk = array.array("d")
        chunk.frombytes(report["latencies"])
        latencies.extend(chunk)
        errors.update(report["errors"])
        requests += report["requests"]
        keys += report["keys"]
        cpu_seconds += report["cpu_seconds"]
    latencies.sort()
    elapsed = spec.duration_s
    return LoadResult(
        system=spec.target.system,
        variant=spec.target.variant,
        kind=spec.target.kind,
        workload=spec.workload,
        concurrency=spec.concurrency,
        processes=len(reports),
        duration_s=elapsed,
        requests=requests,
        keys=keys,
        errors=sum(errors.values()),
        error_codes=dict(errors),
        requests_per_s=requests / elapsed,
        keys_per_s=keys / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        mean_ms=(sum(latencies) / len(latencies) * 1000) if latencies else 0.0,
        generator_cpu_cores=cpu_seconds / elapsed,
        server_cpu_cores=server_cpu,
        server_rss_bytes=server_rss,
    )


# ---- inside a generator process -------------------------------------------------------------


def _generator_main(spec: LoadSpec, share: int, seed: int, channel: Connection) -> None:
    try:
        report = asyncio.run(_generate(spec, share, channel, seed))
        channel.send(("done", report))
    except BaseException as exc:  # report, never hang the parent
        with contextlib.suppress(OSError):
            channel.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        channel.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _generate(spec: LoadSpec, share: int, channel: Connection, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    step = WORKLOADS[spec.workload].make_step(spec.shape, value_of(spec.shape))
    client = await spec.target.connect(share)
    try:
        channel.send(("ready",))
        message = await asyncio.to_thread(channel.recv)
        _, window_start, window_end = message
        latencies = array.array("d")
        errors: Counter[str] = Counter()
        counts = {"requests": 0, "keys": 0}
        cpu: dict[str, float] = {}

        async def sample_cpu() -> None:
            await asyncio.sleep(max(0.0, window_start - time.monotonic()))
            cpu["start"] = _cpu_seconds()
            await asyncio.sleep(max(0.0, window_end - time.monotonic()))
            cpu["end"] = _cpu_seconds()

        async def worker(worker_rng: random.Random) -> None:
            while True:
                sent = time.monotonic()
                if sent >= window_end:
                    return
                try:
                    keys = await step(client, worker_rng)
                except (RequestFailed, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    errors[exc.code if isinstance(exc, RequestFailed) else type(exc).__name__] += 1
                    if errors.total() > 1000 and errors.total() > counts["requests"]:
                        return  # the target is failing: stop hammering it, report errors
                    continue
                if sent >= window_start:
                    latencies.append(time.monotonic() - sent)
                    counts["requests"] += 1
                    counts["keys"] += keys

        workers = [worker(random.Random(rng.random())) for _ in range(share)]
        deadline = window_end + DRAIN_TIMEOUT_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(
                asyncio.get_running_loop().time() + (deadline - time.monotonic())
            ):
                await asyncio.gather(sample_cpu(), *workers)
        cpu.setdefault("start", _cpu_seconds())
        cpu.setdefault("end", _cpu_seconds())
        return {
            "requests": counts["requests"],
            "keys": counts["keys"],
            "errors": dict(errors),
            "latencies": latencies.tobytes(),
            "cpu_seconds": cpu["end"] - cpu["start"],
        }
    finally:
        await client.close()
