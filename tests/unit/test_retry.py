"""The retry policy: backoff shapes, which errors are retried, and the overall deadline."""

from __future__ import annotations

import random

import pytest
from shardkv.client.retry import (
    ConstantBackoff,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    NoBackoff,
    Retry,
)
from shardkv.cluster.errors import InvalidArgument, NotFound, NotPrimary, Unavailable


def test_exponential_backoff_stays_within_the_full_jitter_window() -> None:
    backoff = ExponentialBackoff(base=0.008, cap=0.512, rng=random.Random(7))
    for failures in range(0, 20):
        window = min(0.512, 0.008 * 2**failures)
        for _ in range(50):
            delay = backoff.compute(failures)
            assert 0 <= delay <= window


def test_exponential_backoff_spreads_over_the_window() -> None:
    # Full jitter means the draws cover the window, not a narrow band near its top.
    backoff = ExponentialBackoff(base=0.008, cap=0.512, rng=random.Random(1))
    draws = [backoff.compute(10) for _ in range(2000)]
    assert min(draws) < 0.05 * 0.512
    assert max(draws) > 0.95 * 0.512


def test_exponential_backoff_survives_huge_failure_counts() -> None:
    assert 0 <= ExponentialBackoff(rng=random.Random(0)).compute(10_000) <= 0.512


def test_decorrelated_jitter_is_bounded_and_resets() -> None:
    backoff = DecorrelatedJitterBackoff(base=0.01, cap=0.2, rng=random.Random(3))
    delays = [backoff.compute(i) for i in range(1, 200)]
    assert all(0.01 <= d <= 0.2 for d in delays)
    assert max(delays) > 0.1  # it does grow toward the cap
    backoff.reset()
    assert backoff.compute(1) <= 0.03  # after a reset the window is [base, 3 * base] again


def test_constant_and_no_backoff() -> None:
    assert ConstantBackoff(0.25).compute(9) == 0.25
    assert NoBackoff().compute(9) == 0.0
    with pytest.raises(ValueError):
        ConstantBackoff(-1)
    with pytest.raises(ValueError):
        ExponentialBackoff(base=1, cap=0.5)


def test_delay_for_refuses_unsupported_errors_and_exhausted_budgets() -> None:
    retry = Retry(ConstantBackoff(0.1), retries=2)
    assert retry.delay_for(Unavailable("x"), 1, None) == 0.1
    assert retry.delay_for(Unavailable("x"), 3, None) is None  # out of retries
    assert retry.delay_for(NotFound("x"), 1, None) is None  # a definite answer
    assert retry.delay_for(ValueError("bug"), 1, None) is None
    assert retry.delay_for(Unavailable("x"), 1, 0.05) is None  # would sleep past the deadline


async def test_call_retries_then_succeeds_and_runs_on_error() -> None:
    attempts: list[int] = []
    seen: list[str] = []

    async def attempt() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise NotPrimary("moved")
        return "done"

    async def on_error(error: BaseException) -> None:
        seen.append(type(error).__name__)

    result = await Retry(NoBackoff(), retries=5).call(attempt, on_error)
    assert result == "done"
    assert len(attempts) == 3
    assert seen == ["NotPrimary", "NotPrimary"]


async def test_call_gives_up_after_retries_with_the_last_error() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise Unavailable(f"attempt {calls}")

    with pytest.raises(Unavailable, match="attempt 3"):
        await Retry(NoBackoff(), retries=2).call(attempt)
    assert calls == 3


async def test_call_never_retries_definite_answers() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise InvalidArgument("bad key")

    with pytest.raises(InvalidArgument):
        await Retry(NoBackoff(), retries=10).call(attempt)
    assert calls == 1


async def test_call_respects_the_overall_deadline() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise Unavailable("down")

    # 1000 retries of 40 ms would take 40 s; the 0.1 s deadline stops it after a few.
    with pytest.raises(Unavailable):
        await Retry(ConstantBackoff(0.04), retries=1000, deadline=0.1).call(attempt)
    assert 1 <= calls <= 4


def test_retry_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        Retry(retries=-1)
    with pytest.raises(ValueError):
        Retry(deadline=0)
