"""The ``wal-damage`` fault as a scenario needs it: crash a node, damage its WAL, restart it,
and record what the node did about it.

DESIGN.md's contract for a damaged WAL: a torn or corrupt tail of the newest segment is
truncated on start (repair); corruption anywhere else stops the node with a message naming the
file and offset (refuse). Either is acceptable; serving corrupted data is not, and that is
what the run's checkers then judge over the operations the restarted node answered.

Modes: ``garbage`` appends random bytes to the newest WAL file (a record torn while being
written, never acknowledged: the node must repair it and lose nothing), and the modes of
:mod:`.wal_damage` (``tail``, ``bitflip``, ``truncate``), which may destroy acknowledged records
and so belong on a replica whose shard has other copies. A node that refused is restored from
the originals kept aside and started again at ``stop``, so the run can go on.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.chaos.nemesis.wal_damage import ORIGINAL_SUFFIX, WalDamage, wal_files


class DamagedRestart:
    """``start(targets, mode=...)``: SIGKILL, damage, restart, then wait for the node to be
    ready (repaired) or to exit (refused); ``stop`` brings a refusing node back intact."""

    name = "wal-damage"

    def __init__(
        self,
        *,
        kill: Callable[[str], Awaitable[None]],
        restart: Callable[[str], Awaitable[Any]],
        data_dir_of: Callable[[str], str | Path],
        pid_of: Callable[[str], int | None],
        exited: Callable[[str], int | None],
        ready: Callable[[str], Awaitable[bool]],
        seed: int = 0,
        observe_s: float = 20.0,
    ) -> None:
        self._kill = kill
        self._restart = restart
        self._data_dir_of = data_dir_of
        self._exited = exited
        self._ready = ready
        self._rng = random.Random(seed)
        # Segment files only: the directory also holds a LOCK file and, later, snapshots.
        self._damage = WalDamage(data_dir_of, pid_of=pid_of, seed=seed, patterns=("**/*.wal",))
        self._observe_s = observe_s
        self._refused: list[str] = []
        self._kept: dict[Path, bytes] = {}  # garbage mode: the newest file before damage
        self.outcomes: list[dict[str, Any]] = []

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        mode = str(params.get("mode", "garbage"))
        for target in targets:
            await self._kill(target)
        if mode == "garbage":
            damage = [await asyncio.to_thread(self._append_garbage, t) for t in targets]
            detail: dict[str, Any] = {"damage": damage}
        else:
            detail = await self._damage.start(targets, mode=mode,
                                              flips=int(params.get("flips", 1)))
        outcomes = {}
        for target in targets:
            await self._restart(target)
            outcomes[target] = await self._observe(target)
            if outcomes[target] == "refused":
                self._refused.append(target)
            else:
                await asyncio.to_thread(self._forget_originals, target)
        self.outcomes.append({"mode": mode, **outcomes})
        return {**detail, "mode": mode, "outcome": outcomes}

    def _append_garbage(self, target: str) -> dict[str, Any]:
        files = wal_files(self._data_dir_of(target), self._damage.patterns)
        if not files:
            raise NemesisError(f"{target}: no WAL files to damage")
        newest = files[-1]
        size = newest.stat().st_size
        junk = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 200)))
        self._kept.setdefault(newest, newest.read_bytes())
        with open(newest, "ab") as f:
            f.write(junk)
            f.flush()
            os.fsync(f.fileno())
        return {"path": str(newest), "kind": "garbage", "offset": size, "length": len(junk)}

    async def _observe(self, target: str) -> str:
        deadline = time.monotonic() + self._observe_s
        while time.monotonic() < deadline:
            status = await asyncio.to_thread(self._exited, target)
            if status is not None:
                return "refused" if status != 0 else "exited-0"
            if await self._ready(target):
                return "repaired"
            await asyncio.sleep(0.1)
        return "hung"

    async def stop(self) -> dict[str, Any]:
        brought_back = []
        for target in self._refused:
            await self._damage.heal_all()
            await self._restore_garbage(target)
            await self._restart(target)
            brought_back.append(target)
        self._refused.clear()
        return {"restored": brought_back}

    async def _restore_garbage(self, target: str) -> None:
        root = Path(self._data_dir_of(target))
        for path in [p for p in self._kept if root in p.parents]:
            await asyncio.to_thread(path.write_bytes, self._kept.pop(path))

    def _forget_originals(self, target: str) -> None:
        """A node that repaired owns its files now; copies kept aside would only confuse a
        later restart (they sit in its WAL directory)."""
        root = Path(self._data_dir_of(target))
        for original in root.rglob("*" + ORIGINAL_SUFFIX):
            original.unlink()
        for path in [p for p in self._kept if root in p.parents]:
            del self._kept[path]
        self._damage.done = [d for d in self._damage.done if root not in Path(d.path).parents]

    async def heal_all(self) -> None:
        if self._refused:
            await self.stop()
        # Originals of repaired nodes are dropped: the node owns its (repaired) files now.
        self._damage.done.clear()
