"""The ``file`` nemesis: bit flips and truncation in the WAL files of a stopped node.

What the node must do with the result is the node's contract (DESIGN.md): a torn or corrupt
tail of the newest segment is truncated on start; corruption anywhere else stops the node
with a message naming the file and offset. Never serving corrupted data is what the run then
checks (lost-writes and linearizability over the restarted node).

Damage is only done to a node that is not running (its pid is checked), is chosen from a
seeded generator (so a run replays), and is recorded exactly (file, offset, bit or length).
With ``keep_originals`` each file is copied aside before its first damage, so ``heal_all`` can
restore it, for scenarios that want the node back intact.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.chaos.nemesis.process import is_alive

ORIGINAL_SUFFIX = ".chaos-orig"


@dataclass(frozen=True)
class Damage:
    path: str
    kind: Literal["bitflip", "truncate"]
    offset: int
    bit: int | None = None  # bitflip: which bit of the byte at offset
    old_size: int | None = None  # truncate: the size before


def flip_bit(path: str | Path, offset: int, bit: int) -> Damage:
    """Flip one bit of the byte at ``offset`` (in place, fsynced)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        if not byte:
            raise NemesisError(f"{path}: offset {offset} is past the end")
        f.seek(offset)
        f.write(bytes([byte[0] ^ (1 << bit)]))
        f.flush()
        os.fsync(f.fileno())
    return Damage(str(path), "bitflip", offset, bit=bit)


def truncate_file(path: str | Path, new_size: int) -> Damage:
    """Cut the file to ``new_size`` bytes (a torn write at the tail)."""
    p = Path(path)
    old = p.stat().st_size
    if not 0 <= new_size <= old:
        raise NemesisError(f"{path}: cannot truncate {old} bytes to {new_size}")
    with open(p, "r+b") as f:
        f.truncate(new_size)
    return Damage(str(p), "truncate", new_size, old_size=old)


def wal_files(data_dir: str | Path, patterns: Sequence[str]) -> list[Path]:
    """Non-empty files under ``data_dir`` matching any pattern, in name order."""
    found = {
        p for pattern in patterns for p in Path(data_dir).glob(pattern)
        if p.is_file() and not p.name.endswith(ORIGINAL_SUFFIX) and p.stat().st_size > 0
    }
    return sorted(found)


def plan_damage(
    files: Sequence[Path],
    rng: random.Random,
    *,
    mode: Literal["bitflip", "truncate", "tail"],
    flips: int = 1,
) -> list[tuple[str, Path, int, int]]:
    """Choose damage deterministically: ``bitflip`` flips ``flips`` random bits anywhere,
    ``truncate`` cuts a random file at a random offset, ``tail`` tears the newest file's last
    few bytes (the repairable case). Returns (kind, path, offset, bit) tuples."""
    if not files:
        raise NemesisError("no WAL files to damage")
    if mode == "bitflip":
        plan = []
        for _ in range(flips):
            path = rng.choice(list(files))
            plan.append(("bitflip", path, rng.randrange(path.stat().st_size), rng.randrange(8)))
        return plan
    if mode == "truncate":
        path = rng.choice(list(files))
        return [("truncate", path, rng.randrange(path.stat().st_size), 0)]
    newest = files[-1]
    size = newest.stat().st_size
    return [("truncate", newest, max(0, size - rng.randint(1, min(size, 64))), 0)]


class WalDamage:
    """``start(targets, mode="bitflip"|"truncate"|"tail", flips=1)`` damages each target's
    WAL; the targets must be stopped (kill them first). ``stop`` does nothing: damage is
    permanent, what matters is how the node handles it on restart."""

    name = "file"

    def __init__(
        self,
        data_dir_of: Callable[[str], str | Path],
        *,
        pid_of: Callable[[str], int | None] | None = None,
        patterns: Sequence[str] = ("**/*.wal", "**/wal/*"),
        seed: int = 0,
        keep_originals: bool = True,
    ) -> None:
        self._data_dir_of = data_dir_of
        self._pid_of = pid_of
        self.patterns = tuple(patterns)
        self._rng = random.Random(seed)
        self.keep_originals = keep_originals
        self.done: list[Damage] = []

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        mode = params.get("mode", "bitflip")
        flips = int(params.get("flips", 1))
        damages: list[Damage] = []
        for target in targets:
            pid = self._pid_of(target) if self._pid_of is not None else None
            if pid is not None and is_alive(pid):
                raise NemesisError(f"refusing to damage the WAL of {target}: pid {pid} runs")
            files = wal_files(self._data_dir_of(target), self.patterns)
            for kind, path, offset, bit in plan_damage(files, self._rng, mode=mode, flips=flips):
                damages.append(await asyncio.to_thread(self._apply, kind, path, offset, bit))
        self.done.extend(damages)
        return {"damage": [asdict(d) for d in damages]}

    def _apply(self, kind: str, path: Path, offset: int, bit: int) -> Damage:
        original = path.with_name(path.name + ORIGINAL_SUFFIX)
        if self.keep_originals and not original.exists():
            shutil.copy2(path, original)
        if kind == "bitflip":
            return flip_bit(path, offset, bit)
        return truncate_file(path, offset)

    async def stop(self) -> dict[str, Any]:
        return {}

    async def heal_all(self) -> None:
        """Put back the originals kept aside (when ``keep_originals``)."""
        if not self.keep_originals:
            return
        for path in sorted({Path(d.path) for d in self.done}):
            original = path.with_name(path.name + ORIGINAL_SUFFIX)
            if original.exists():
                await asyncio.to_thread(shutil.move, original, path)
        self.done.clear()
