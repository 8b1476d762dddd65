"""Combined faults: parts start in order on the same targets, stop in reverse, a part that
cannot start undoes the ones before it, and ``heal_all`` heals every part even when one
fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from shardkv.chaos.nemesis.combined import Combined
from shardkv.chaos.nemesis.fault import NemesisError


class Recording:
    """A nemesis that writes what is done to it into a shared journal."""

    def __init__(self, name: str, journal: list[tuple[str, str, Any]], *,
                 fail_start: bool = False, fail_heal: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.fail_heal = fail_heal

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        if self.fail_start:
            raise NemesisError(f"{self.name} cannot start")
        self.journal.append((self.name, "start", (list(targets), params)))
        return {"did": self.name}

    async def stop(self) -> dict[str, Any]:
        self.journal.append((self.name, "stop", None))
        return {"undid": self.name}

    async def heal_all(self) -> None:
        self.journal.append((self.name, "heal_all", None))
        if self.fail_heal:
            raise NemesisError(f"{self.name} cannot heal")


async def test_parts_start_in_order_with_their_params_and_stop_in_reverse() -> None:
    journal: list[tuple[str, str, Any]] = []
    both = Combined("clock-drift-isolated-primary",
                    [Recording("clock", journal), Recording("partition", journal)],
                    fixed={"clock": {"mode": "drift", "rate": 1.02}})
    detail = await both.start(["n2"], clock={"rate": 0.96}, partition={"grudge": None})
    assert detail == {"clock": {"did": "clock"}, "partition": {"did": "partition"}}
    assert journal == [
        ("clock", "start", (["n2"], {"mode": "drift", "rate": 0.96})),  # schedule over fixed
        ("partition", "start", (["n2"], {"grudge": None})),
    ]
    journal.clear()
    assert await both.stop() == {"partition": {"undid": "partition"},
                                 "clock": {"undid": "clock"}}
    assert [(n, a) for n, a, _ in journal] == [("partition", "stop"), ("clock", "stop")]
    journal.clear()
    assert await both.stop() == {}  # nothing started: nothing to undo
    assert journal == []


async def test_a_part_that_cannot_start_undoes_the_ones_before_it() -> None:
    journal: list[tuple[str, str, Any]] = []
    both = Combined("x", [Recording("clock", journal),
                          Recording("partition", journal, fail_start=True)])
    with pytest.raises(NemesisError, match="partition cannot start"):
        await both.start(["n1"])
    assert [(n, a) for n, a, _ in journal] == [("clock", "start"), ("clock", "stop")]


async def test_heal_all_heals_every_part_and_reports_the_first_failure() -> None:
    journal: list[tuple[str, str, Any]] = []
    both = Combined("x", [Recording("clock", journal),
                          Recording("partition", journal, fail_heal=True)])
    with pytest.raises(NemesisError, match="partition cannot heal"):
        await both.heal_all()
    assert [(n, a) for n, a, _ in journal] == [("partition", "heal_all"),
                                               ("clock", "heal_all")]


def test_a_combined_fault_needs_parts() -> None:
    with pytest.raises(ValueError):
        Combined("empty", [])
