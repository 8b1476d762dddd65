"""Two or more faults in one window, on the same targets.

The schedule plays one fault at a time, so each anomaly is attributable. Some properties are
only at stake when faults *overlap*: the primary lease is what keeps a primary cut off from
the coordinator from serving after its replacement, and its timing argument assumes the
primary's clock runs within a bounded rate of real time. A skewed clock alone changes nothing
(nobody is being replaced); a partition alone is the case the lease already survives. Only a
slow clock *during* the partition tests the bound, and only a clock slower than the bound
should break it. :class:`Combined` starts its parts in order on the same targets and stops
them in reverse, so that is one scheduled fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shardkv.chaos.nemesis.fault import Nemesis, NemesisError


class Combined:
    """``parts`` started in order on the same targets; ``params`` for each part come from the
    schedule's params under the part's name (``{"clock": {...}, "partition": {...}}``) merged
    over ``fixed`` (the catalog's per-part defaults)."""

    def __init__(self, name: str, parts: Sequence[Nemesis],
                 fixed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if not parts:
            raise ValueError("a combined fault needs at least one part")
        self.name = name
        self.parts = list(parts)
        self.fixed = {k: dict(v) for k, v in (fixed or {}).items()}
        self._started: list[Nemesis] = []

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        for part in self.parts:
            part_params = {**self.fixed.get(part.name, {}), **(params.get(part.name) or {})}
            try:
                detail[part.name] = await part.start(targets, **part_params)
            except NemesisError:
                await self.stop()  # undo the parts already started, then report
                raise
            self._started.append(part)
        return detail

    async def stop(self) -> dict[str, Any]:
        started, self._started = self._started, []
        detail: dict[str, Any] = {}
        for part in reversed(started):
            detail[part.name] = await part.stop()
        return detail

    async def heal_all(self) -> None:
        """Heal every part, even when one fails; the first failure is raised after."""
        self._started = []
        failure: NemesisError | None = None
        for part in reversed(self.parts):
            try:
                await part.heal_all()
            except NemesisError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
