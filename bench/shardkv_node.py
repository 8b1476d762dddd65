"""A shardkv node started by the benchmark: ``shardkv node`` standalone (the primary of a
one-node shard, no coordinator), in a temporary data directory, on a free port."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from shardkv.cluster.local_processes import free_port

from bench.server_process import ServerProcess


def shardkv_node(
    work_dir: Path, *, fsync: str, extra_args: Sequence[str] = (), name: str | None = None
) -> ServerProcess:
    """A node (not yet started) with ``--fsync fsync``; ``extra_args`` go to ``shardkv node``
    as they are (``--engine sqlite``, ...). It is ready when ``/ready`` answers 200."""
    name = name or f"shardkv-fsync-{fsync}"
    port = free_port()
    data_dir = work_dir / name
    argv = [
        sys.executable,
        "-m",
        "shardkv.cluster.cli",
        "node",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--fsync",
        fsync,
        *extra_args,
    ]
    return ServerProcess(
        name,
        argv,
        log_path=work_dir / f"{name}.log",
        url=f"http://127.0.0.1:{port}",
        ready_path="/ready",
    )
