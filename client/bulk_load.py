"""``shardkv load FILE``: bulk loading through the client's ``mput``.

Lines are read in batches and each batch is one ``mput`` (the same path as the library's and
the CLI's ``mput``: split by shard and into chunks under the node's limits, each chunk one
atomic write, so a batch costs one WAL group per shard instead of one fsync per key); several
batches are in flight at once. A malformed line is skipped, never half-written, and reported
with its line number and reason through ``on_skip`` as it is found (the CLI prints each on
stderr; ``--strict`` makes any skip fail the command). A batch that fails is reported with its
keys' errors; the load goes on with the next batch.

Formats: JSONL (``{"key": "...", "value": ...}`` per line: a string value is stored as UTF-8,
``{"b64": "..."}`` as its bytes, anything else as compact JSON) and CSV (``key,value``; a
first row that reads ``key,value`` is a header).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from shardkv.client import values
from shardkv.client.async_client import Client
from shardkv.client.multi_key import MultiKeyError
from shardkv.cluster.errors import ShardKVError

MAX_REPORTED_PROBLEMS = 10


def _value_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        return base64.b64decode(value["b64"], validate=True)
    return values.json(value)


def parse_jsonl_line(line: str) -> tuple[str, bytes]:
    record = json.loads(line)
    if not isinstance(record, dict) or "key" not in record or "value" not in record:
        raise ValueError('each line must be an object with "key" and "value"')
    key = record["key"]
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    return key, _value_bytes(record["value"])


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"


def read_records(
    stream: TextIO, fmt: str, problems: list[str]
) -> Iterator[tuple[str, bytes] | None]:
    """(key, value) per good line, None per skipped one (its reason appended to problems)."""
    if fmt == "csv":
        for number, row in enumerate(csv.reader(stream), start=1):
            if number == 1 and [c.strip().lower() for c in row] == ["key", "value"]:
                continue
            if len(row) != 2 or not row[0]:
                problems.append(f"line {number}: expected key,value, got {len(row)} fields")
                yield None
                continue
            yield row[0], row[1].encode("utf-8")
        return
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield parse_jsonl_line(line)
        except (ValueError, binascii.Error) as exc:
            problems.append(f"line {number}: {exc}")
            yield None


def _take(
    records: Iterator[tuple[str, bytes] | None], count: int
) -> list[tuple[str, bytes] | None]:
    """The next ``count`` records (fewer at the end of the file)."""
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= count:
            break
    return chunk


class ProgressBar:
    """A one-line progress bar on a terminal stream, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO, total_bytes: int) -> None:
        self.stream = stream
        self.total = max(total_bytes, 1)
        self.started = time.monotonic()
        self._last_draw = 0.0

    def update(self, done_bytes: int, keys: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        fraction = min(done_bytes / self.total, 1.0)
        width = 30
        filled = int(fraction * width)
        rate = keys / max(now - self.started, 1e-9)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} "
            f"{keys} keys {rate:,.0f}/s"
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()


async def load_file(
    kv: Client,
    path: Path,
    *,
    fmt: str = "auto",
    batch_size: int = 200,
    concurrency: int = 8,
    ttl: float | None = None,
    progress: TextIO | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load ``path`` into the cluster; returns a report (loaded, skipped, errors, rate).
    ``on_skip`` hears ``"line N: reason"`` for every skipped line, as it is skipped."""
    if batch_size < 1 or concurrency < 1:
        raise ValueError("batch size and concurrency must be >= 1")
    fmt = detect_format(path, fmt)
    problems: list[str] = []
    errors: list[str] = []
    loaded = 0
    failed = 0
    skipped = 0
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    size = (await asyncio.to_thread(path.stat)).st_size
    bar = ProgressBar(progress, size) if progress is not None else None
    started = time.monotonic()

    async def send(batch: list[tuple[str, bytes]]) -> None:
        nonlocal loaded, failed
        try:
            await kv.mput(batch, ttl=ttl)
            loaded += len(batch)
        except MultiKeyError as exc:
            loaded += len(batch) - len(exc.errors)
            failed += len(exc.errors)
            if len(errors) < MAX_REPORTED_PROBLEMS:
                errors.append(str(exc))
        except ShardKVError as exc:
            failed += len(batch)
            if len(errors) < MAX_REPORTED_PROBLEMS:
                errors.append(f"{exc.code.value}: {exc.message}")
        finally:
            slots.release()

    raw = await asyncio.to_thread(path.open, "rb")
    try:
        stream = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        records = read_records(stream, fmt, problems)
        while True:
            # File reading and parsing happen in a thread: the loop keeps the mputs moving.
            chunk = await asyncio.to_thread(_take, records, batch_size)
            if not chunk:
                break
            batch = [r for r in chunk if r is not None]
            if on_skip is not None:
                for problem in problems[skipped:]:
                    on_skip(problem)
            skipped += len(chunk) - len(batch)
            if batch:
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(send(batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if bar is not None:
                bar.update(raw.tell(), loaded)
        if tasks:
            await asyncio.gather(*tasks)
        if bar is not None:
            bar.update(size, loaded, final=True)
    finally:
        raw.close()
    seconds = time.monotonic() - started
    return {
        "file": str(path),
        "format": fmt,
        "loaded": loaded,
        "failed": failed,
        "skipped": skipped,
        "problems": problems[:MAX_REPORTED_PROBLEMS],
        "errors": errors,
        "seconds": seconds,
        "rate": loaded / seconds if seconds > 0 else 0.0,
    }
