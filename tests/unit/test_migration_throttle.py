"""The bulk copy's adaptive throttle: a late loop makes it back off, an on-time one lets it
speed up again, a disabled one never waits. No timing is asserted beyond "a loop held for
50 ms wakes a 5-ms timer more than 8 ms late"."""

from __future__ import annotations

import asyncio
import time

import pytest
from shardkv.node.migration.throttle import STEP_S, LoopLagThrottle


def _hold_the_loop(seconds: float) -> None:
    """Block the event loop, as a long copy step or a busy CPU would."""
    time.sleep(seconds)


async def test_late_loop_grows_the_pause_and_on_time_loop_shrinks_it() -> None:
    throttle = LoopLagThrottle(max_lag_s=0.008)
    now = asyncio.get_running_loop().time()
    throttle.record(now, 0.03)
    await throttle.wait()
    assert throttle.delay_s == STEP_S
    await throttle.wait()
    assert throttle.delay_s == 1.5 * STEP_S
    assert throttle.status()["worst_lag_ms"] == 30
    throttle.record(now + 1.0, 0.001)  # the late tick is out of the window now
    pauses = []
    for _ in range(4):
        await throttle.wait()
        pauses.append(throttle.delay_s)
    assert pauses == pytest.approx([0.75 * 1.5 * STEP_S, 0.75 * 0.75 * 1.5 * STEP_S, 0, 0])
    assert throttle.waited_s == pytest.approx((1 + 1.5) * STEP_S + sum(pauses))


async def test_the_target_is_relative_to_the_loop_before_the_copy() -> None:
    throttle = LoopLagThrottle(max_lag_s=0.008)
    throttle.start()
    try:
        async def busy() -> None:  # a busy machine: the loop late at every tick
            while True:
                _hold_the_loop(0.03)
                await asyncio.sleep(0)

        hog = asyncio.create_task(busy())
        try:
            async with asyncio.timeout(10):
                await throttle.calibrate()
        finally:
            hog.cancel()
        assert throttle.baseline_lag_s is not None and throttle.baseline_lag_s > 0.02
        assert throttle.max_lag_s == 2 * throttle.baseline_lag_s
    finally:
        await throttle.stop()


def test_one_late_tick_is_not_the_baseline() -> None:
    """A single pause (a full GC, a process starting beside the source) before the copy
    must not become the target: that source would never be paced."""
    throttle = LoopLagThrottle(max_lag_s=0.008)
    for i in range(50):
        throttle.record(i * 0.01, 0.25 if i == 20 else 0.001)
    assert throttle.recent_lag(0.5) == 0.25
    assert throttle.lag_quantile(0.5, 0.9) == 0.001


async def test_disabled_throttle_never_waits() -> None:
    throttle = LoopLagThrottle(max_lag_s=0.0)
    throttle.start()
    assert not throttle.enabled
    throttle.record(asyncio.get_running_loop().time(), 1.0)
    await throttle.wait()
    assert throttle.delay_s == 0 and throttle.waited_s == 0
    await throttle.stop()


async def test_an_adopted_baseline_skips_the_calibration() -> None:
    """The clean-up takes the copy's baseline: no second half-second of watching."""
    throttle = LoopLagThrottle(max_lag_s=0.008)
    throttle.adopt(0.01)
    throttle.start()
    try:
        await throttle.calibrate()
        assert not throttle._ticks  # it returned before the ticker's first tick
        assert throttle.baseline_lag_s == 0.01 and throttle.max_lag_s == 0.02
    finally:
        await throttle.stop()


async def test_no_pause_without_a_foreground_to_protect() -> None:
    """A late loop pauses the copy only while foreground requests arrive: with none in the
    last window, a late loop delays nobody but the copy."""
    requests = [0]
    throttle = LoopLagThrottle(max_lag_s=0.008, activity=lambda: requests[0])
    loop = asyncio.get_running_loop()
    throttle.record(loop.time(), 0.05)
    await throttle.wait()  # the count was just seen for the first time: a foreground
    assert throttle.delay_s == STEP_S
    throttle._seen = (requests[0], loop.time() - 1.0)  # nothing arrived for a second
    throttle.record(loop.time(), 0.05)
    await throttle.wait()
    assert throttle.delay_s == 0.75 * STEP_S or throttle.delay_s == 0.0
    assert throttle.status()["idle_batches"] == 1
    requests[0] += 1  # a request arrives: paced again
    throttle.record(loop.time(), 0.05)
    await throttle.wait()
    assert throttle.delay_s > 0 and throttle.status()["idle_batches"] == 1


def test_the_baseline_is_no_single_busy_half_second() -> None:
    """Seconds of watching before the copy (an add waits for its new members): one busy
    half-second among them (a process starting, the targets' floors) is not the baseline,
    or that source would not be paced at all (session 8: baselines of 76-236 ms)."""
    throttle = LoopLagThrottle(max_lag_s=0.008)
    throttle._window_end = 0.5  # what ``start`` sets: the first window closes 0.5 s in
    for i in range(401):  # 2 s of 5-ms ticks; the last half-second is busy
        now = i * 0.005
        throttle.record(now, 0.2 if now > 1.5 else 0.002)
    assert throttle.lag_quantile(0.5, 0.9) == 0.2  # what the baseline was before
    throttle.settle()
    assert throttle.baseline_lag_s == 0.002
    assert throttle.max_lag_s == 0.008  # the floor
    assert throttle.status()["baseline_windows_ms"] == [2.0, 2.0, 2.0, 200.0]
