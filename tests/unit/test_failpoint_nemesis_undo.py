"""The failpoint nemesis's stop, on fakes: a target that crashed at its failpoint but was
still exiting when the window closed (no answer, not reapable yet) is restarted once it is
gone, not left down for the rest of the run; a live target is only disarmed."""

from __future__ import annotations

from typing import Any

import pytest
import shardkv.chaos.nemesis.failpoint as failpoint_module
from shardkv.chaos.nemesis.failpoint import FailpointNemesis


def _nemesis(exit_after: int | None, answer: int,
             monkeypatch: pytest.MonkeyPatch) -> tuple[FailpointNemesis, list[str]]:
    """``exit_after``: how many ``exited`` calls say "running" first (None: always)."""
    calls = {"exited": 0}
    restarted: list[str] = []

    def exited(target: str) -> int | None:
        calls["exited"] += 1
        if exit_after is None or calls["exited"] <= exit_after:
            return None
        return 137

    async def restart(target: str) -> None:
        restarted.append(target)

    nemesis = FailpointNemesis(url_of=lambda t: f"http://{t}", exited=exited, restart=restart)

    async def put(target: str, failpoint: str, action: str) -> tuple[int, str]:
        return (answer, "") if action == "off" else (200, "")

    monkeypatch.setattr(nemesis, "_put", put)
    monkeypatch.setattr(failpoint_module, "CRASH_EXIT_WAIT_S", 5.0)
    return nemesis, restarted


async def test_a_target_still_exiting_at_stop_is_restarted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    nemesis, restarted = _nemesis(exit_after=2, answer=0, monkeypatch=monkeypatch)
    await nemesis.start(["n3"], failpoint="primary_before_commit", action="1*crash")
    detail: dict[str, Any] = await nemesis.stop()
    assert detail["outcome"] == {"n3": "restarted"}
    assert restarted == ["n3"]


async def test_a_live_target_is_only_disarmed(monkeypatch: pytest.MonkeyPatch) -> None:
    nemesis, restarted = _nemesis(exit_after=None, answer=200, monkeypatch=monkeypatch)
    await nemesis.start(["n1"], failpoint="primary_before_commit", action="1*crash")
    assert (await nemesis.stop())["outcome"] == {"n1": "disarmed"}
    assert restarted == []
