"""CPU time and memory of a process, read from /proc (psutil is not a dependency).

The benchmark reports the server's CPU next to the load generator's, so that a reader can see
which side was the bottleneck on a small machine where both share the cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included).

    Fields 14 and 15 of /proc/<pid>/stat, in clock ticks. The command name (field 2) may hold
    spaces and parentheses, so the fields are counted from the last ')'.
    """
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14 -> index 11, stime field 15 -> index 12.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process so far: system time is the kernel's work on
    its behalf (syscalls: socket sends on loopback run the receiver's TCP path too, fsync)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident set size of the process, from VmRSS in /proc/<pid>/status (0 if absent)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# A server may be several processes (a replicated shard: its primary and replicas): its CPU is
# then their sum, and its RSS the first one's (the process the load reaches).
Pids = int | Sequence[int]


def group_cpu_seconds(pids: Pids) -> float:
    """``process_cpu_seconds`` of one pid, or the sum over a group of pids."""
    if isinstance(pids, int):
        return process_cpu_seconds(pids)
    return sum(process_cpu_seconds(pid) for pid in pids)


def first_pid(pids: Pids) -> int:
    return pids if isinstance(pids, int) else pids[0]
