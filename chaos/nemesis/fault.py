"""What every nemesis offers the schedule, and how it fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol


class NemesisError(RuntimeError):
    """A fault could not be injected or healed (a command failed, a target is unknown)."""


class Nemesis(Protocol):
    """``start`` injects the fault on ``targets`` and returns what it did (for the history);
    ``stop`` undoes the last ``start``; ``heal_all`` undoes everything this nemesis ever did
    and must be safe to call at any time, any number of times (it runs in ``finally``)."""

    name: str

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]: ...

    async def stop(self) -> dict[str, Any]: ...

    async def heal_all(self) -> None: ...


async def run_command(*argv: str, check: bool = True) -> tuple[int, str]:
    """Run a system command without blocking the loop; returns (status, stderr+stdout)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode("utf-8", "replace").strip()
    if check and proc.returncode != 0:
        raise NemesisError(f"{' '.join(argv)} failed ({proc.returncode}): {text}")
    return proc.returncode or 0, text
