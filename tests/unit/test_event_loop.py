"""cluster/event_loop.py: which loop a process runs, and the switch that turns uvloop off."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest
from shardkv.cluster import event_loop

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _which() -> str:
    await asyncio.sleep(0)
    return event_loop.running_loop_name()


def test_the_switch_reads_on_and_off_and_refuses_anything_else() -> None:
    assert event_loop.uvloop_wanted({}) is True
    assert event_loop.uvloop_wanted({"SHARDKV_UVLOOP": "1"}) is True
    assert event_loop.uvloop_wanted({"SHARDKV_UVLOOP": " Off "}) is False
    assert event_loop.uvloop_wanted({"SHARDKV_UVLOOP": "0"}) is False
    with pytest.raises(ValueError, match="SHARDKV_UVLOOP"):
        event_loop.uvloop_wanted({"SHARDKV_UVLOOP": "maybe"})


def test_off_runs_asyncio_default_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDKV_UVLOOP", "0")
    assert event_loop.loop_name() == "asyncio"
    assert event_loop.run(_which()) == "asyncio"


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="uvloop is a dependency on Linux only")
def test_on_linux_the_default_is_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HAS_UVLOOP, "uvloop is a dependency on Linux (pyproject.toml)"
    monkeypatch.delenv("SHARDKV_UVLOOP", raising=False)
    assert event_loop.loop_name() == "uvloop"
    assert event_loop.run(_which()) == "uvloop"
