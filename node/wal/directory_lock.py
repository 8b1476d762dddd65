"""The WAL directory's exclusive lock: one process per log.

Two nodes appending to one log would interleave frames and break the CRC chain, and a
second process reading while the first truncates could serve entries that no longer exist.
``flock`` on a ``LOCK`` file is the guard because the kernel drops it when the process dies:
a crash never leaves a stale lock that an operator must remove by hand.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from shardkv.cluster.durable_file import ensure_dir
from shardkv.node.wal.model import WalLocked

LOCK_FILE = "LOCK"


def lock_directory(directory: Path) -> int:
    """Take the log's exclusive lock (``flock`` on ``LOCK``). Returns the descriptor holding
    it (closing it releases the lock); raises ``WalLocked`` if another process holds it."""
    ensure_dir(directory)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WalLocked(f"the WAL in {directory} is in use by another process") from None
    return fd
