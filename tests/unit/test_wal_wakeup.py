"""``Wakeup``: the WAL writer's and the Store applier's wake-up flag (node/wal/wakeup.py)."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.node.wal.wakeup import Wakeup


async def test_a_set_flag_returns_at_once_and_clear_makes_the_next_wait_block() -> None:
    wakeup = Wakeup(asyncio.get_running_loop())
    wakeup.set()
    await wakeup.wait()  # set: no wait at all
    assert wakeup.is_set()
    wakeup.clear()
    waiting = asyncio.ensure_future(wakeup.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    wakeup.set()
    await asyncio.wait_for(waiting, 5)
    assert wakeup.is_set()


async def test_a_cancelled_wait_leaves_the_flag_usable() -> None:
    wakeup = Wakeup(asyncio.get_running_loop())
    waiting = asyncio.ensure_future(wakeup.wait())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    wakeup.set()  # the cancelled waiter is not resolved again
    await asyncio.wait_for(wakeup.wait(), 5)


async def test_a_second_waiter_is_refused() -> None:
    wakeup = Wakeup(asyncio.get_running_loop())
    first = asyncio.ensure_future(wakeup.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await wakeup.wait()
    wakeup.set()
    await asyncio.wait_for(first, 5)


async def test_a_limited_wait_ends_unset_at_its_limit_and_the_flag_stays_usable() -> None:
    wakeup = Wakeup(asyncio.get_running_loop())
    await wakeup.wait_at_most(0.01)  # nobody sets it: returns quietly at the limit
    assert not wakeup.is_set()
    waiting = asyncio.ensure_future(wakeup.wait_at_most(None))  # no limit: waits for set
    await asyncio.sleep(0)
    assert not waiting.done()
    wakeup.set()
    await asyncio.wait_for(waiting, 5)
    assert wakeup.is_set()
