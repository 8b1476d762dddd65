"""kill and pause: signals to node processes, by pid.

``kill`` sends SIGKILL (no shutdown hook runs: exactly a crash), waits until the process is
gone, and on ``stop`` restarts it with the same data through the ``restart`` callback the
launcher provides. ``pause`` sends SIGSTOP (the process is frozen, its sockets stay open and
its peers see it hang, like a long GC pause or a stalled VM) and ``stop`` sends SIGCONT.
``heal_all`` resumes every process it ever paused and restarts every one it killed.

Targets are names (node ids); ``pid_of`` resolves a name to the current pid, because a
restarted node has a new one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from shardkv.chaos.nemesis.fault import NemesisError


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state (R, S, D, T stopped, Z zombie), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces: the state follows the ')'.
    return stat[stat.rindex(")") + 2]


def is_alive(pid: int) -> bool:
    """Running or stopped, not gone and not a zombie awaiting its parent."""
    return process_state(pid) not in (None, "Z", "X")


async def wait_process_state(
    pid: int, wanted: Callable[[str | None], bool], *, timeout_s: float = 5.0
) -> str | None:
    """Poll /proc until ``wanted(state)``; raises NemesisError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = process_state(pid)
        if wanted(state):
            return state
        if time.monotonic() > deadline:
            raise NemesisError(f"process {pid} still in state {state!r} after {timeout_s} s")
        await asyncio.sleep(0.01)


class ProcessNemesis:
    """``mode="kill"``: SIGKILL then restart; ``mode="pause"``: SIGSTOP then SIGCONT."""

    def __init__(
        self,
        mode: Literal["kill", "pause"],
        pid_of: Callable[[str], int],
        restart: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        if mode not in ("kill", "pause"):
            raise ValueError(f"mode must be kill or pause, not {mode!r}")
        self.name = mode
        self.mode = mode
        self._pid_of = pid_of
        self._restart = restart
        self._active: list[str] = []  # targets of the current start
        self._paused: dict[str, int] = {}  # every target paused and not resumed yet
        self._killed: list[str] = []  # every target killed and not restarted yet

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        done: dict[str, int] = {}
        for target in targets:
            pid = self._pid_of(target)
            try:
                if self.mode == "kill":
                    os.kill(pid, signal.SIGKILL)
                    await wait_process_state(pid, lambda s: s in (None, "Z", "X"))
                    if target not in self._killed:
                        self._killed.append(target)
                else:
                    os.kill(pid, signal.SIGSTOP)
                    await wait_process_state(pid, lambda s: s in ("T", "t"))
                    self._paused[target] = pid
            except ProcessLookupError as exc:
                raise NemesisError(f"{self.mode} {target}: process {pid} does not exist") from exc
            done[target] = pid
            self._active.append(target)
        return {"signal": "SIGKILL" if self.mode == "kill" else "SIGSTOP", "pids": done}

    async def stop(self) -> dict[str, Any]:
        targets, self._active = self._active, []
        return await self._undo(targets)

    async def heal_all(self) -> None:
        self._active = []
        await self._undo([*self._paused, *self._killed])

    async def _undo(self, targets: Sequence[str]) -> dict[str, Any]:
        undone: list[str] = []
        for target in targets:
            if target in self._paused:
                pid = self._paused.pop(target)
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    continue  # it died while paused; nothing to resume
                undone.append(target)
            elif target in self._killed:
                if self._restart is None:
                    raise NemesisError(f"cannot restart {target}: no restart callback")
                await self._restart(target)
                self._killed.remove(target)
                undone.append(target)
        return {"undo": "resume" if self.mode == "pause" else "restart", "undone": undone}
