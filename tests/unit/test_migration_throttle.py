"""The bulk copy's adaptive throttle: a late loop makes it back off, a disabled one never
waits (no timing is asserted beyond "a loop blocked for 50 ms is later than 8 ms")."""

from __future__ import annotations

import asyncio
import time

from shardkv.node.migration.throttle import STEP_S, LoopLagThrottle


async def _ticks_seen(throttle: LoopLagThrottle, count: int) -> None:
    """Await ``count`` ticker samples (with a deadline), never a bare sleep-and-hope."""
    async with asyncio.timeout(10):
        while len(throttle._ticks) < count:
            await asyncio.sleep(0.001)


async def test_a_blocked_loop_makes_the_copy_back_off() -> None:
    throttle = LoopLagThrottle(max_lag_s=0.008)
    throttle.start()
    try:
        await _ticks_seen(throttle, 1)
        seen = len(throttle._ticks)
        time.sleep(0.05)  # the loop is held, as a long copy step or a busy CPU would
        await _ticks_seen(throttle, seen + 1)
        assert throttle.recent_lag() > 0.008
        await throttle.wait()
        assert throttle.delay_s == STEP_S
        await throttle.wait()
        assert throttle.delay_s >= 2 * STEP_S
        assert throttle.status()["worst_lag_ms"] > 8
    finally:
        await throttle.stop()


async def test_disabled_throttle_never_waits() -> None:
    throttle = LoopLagThrottle(max_lag_s=0.0)
    throttle.start()
    assert not throttle.enabled and throttle._task is None
    time.sleep(0.02)
    await throttle.wait()
    assert throttle.delay_s == 0 and throttle.waited_s == 0
    await throttle.stop()
