"""Retry policy: how often, how long to wait, and for which errors.

The shape is redis-py's: a ``Retry(backoff, retries, supported_errors)`` object and a family of
backoff strategies. Defaults are small (base 8 ms, cap 512 ms) because the errors we retry are
usually brief (a primary failing over, a connection being re-established) and a client that
waits long multiplies tail latency for everyone behind it. Jitter matters more than the curve:
many clients that saw the same failure must not come back in lockstep.

On top of the count, a Retry has an overall deadline: the caller's timeout bounds the whole
sequence of attempts and sleeps, never a single attempt only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from shardkv.cluster.errors import (
    NotPrimary,
    OutcomeUnknown,
    StaleEpoch,
    StaleMap,
    Timeout,
    TooStale,
    Unavailable,
)

T = TypeVar("T")

DEFAULT_BASE = 0.008
DEFAULT_CAP = 0.512


class Backoff(Protocol):
    """A strategy: the delay before the next attempt, given how many have failed so far."""

    def reset(self) -> None: ...

    def compute(self, failures: int) -> float: ...


class NoBackoff:
    """Retry at once: for errors where the next attempt goes somewhere else anyway."""

    def reset(self) -> None:
        pass

    def compute(self, failures: int) -> float:
        return 0.0


class ConstantBackoff:
    """The same delay every time (tests, or a caller who knows the recovery time)."""

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.delay = delay

    def reset(self) -> None:
        pass

    def compute(self, failures: int) -> float:
        return self.delay


class ExponentialBackoff:
    """Exponential with full jitter: a uniform draw in [0, min(cap, base * 2**failures)].

    Full jitter (rather than +/- a fraction) spreads a herd of clients over the whole window,
    which is what keeps a recovering primary from being hit by all of them at the same instant.
    """

    def __init__(
        self,
        base: float = DEFAULT_BASE,
        cap: float = DEFAULT_CAP,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if base < 0 or cap < base:
            raise ValueError(f"need 0 <= base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def reset(self) -> None:
        pass

    def compute(self, failures: int) -> float:
        # Clamp the exponent so huge failure counts never overflow a float.
        ceiling = min(self.cap, self.base * (2 ** min(max(failures, 0), 62)))
        return self._rng.uniform(0, ceiling)


class DecorrelatedJitterBackoff:
    """Decorrelated jitter: each delay is drawn from [base, 3 * previous delay], capped.

    It grows like exponential backoff but each client's sequence wanders independently, so
    retries de-synchronize even when the failures did not.
    """

    def __init__(
        self,
        base: float = DEFAULT_BASE,
        cap: float = DEFAULT_CAP,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if base < 0 or cap < base:
            raise ValueError(f"need 0 <= base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()
        self._previous = base

    def reset(self) -> None:
        self._previous = self.base

    def compute(self, failures: int) -> float:
        upper = max(self.base, self._previous * 3)
        delay = min(self.cap, self._rng.uniform(self.base, upper))
        self._previous = delay
        return delay


# Errors after which trying again can succeed: the node or the route was wrong *now*.
# NOT_PRIMARY and STALE_MAP are also handled by the router (refresh the map, count a hop);
# they are listed so that a bare Retry around any call does the right thing.
DEFAULT_SUPPORTED_ERRORS: tuple[type[BaseException], ...] = (
    Unavailable,
    OutcomeUnknown,
    Timeout,
    NotPrimary,
    StaleMap,
    StaleEpoch,
    TooStale,
)


class Retry:
    """How a failed call is retried: ``retries`` more attempts at most, sleeping
    ``backoff.compute(failures)`` in between, only for ``supported_errors``, and never past
    ``deadline`` seconds from the first attempt (None = no overall bound)."""

    def __init__(
        self,
        backoff: Backoff | None = None,
        retries: int = 3,
        supported_errors: tuple[type[BaseException], ...] = DEFAULT_SUPPORTED_ERRORS,
        *,
        deadline: float | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if deadline is not None and deadline <= 0:
            raise ValueError(f"deadline must be > 0, got {deadline}")
        self.backoff: Backoff = backoff if backoff is not None else ExponentialBackoff()
        self.retries = retries
        self.supported_errors = supported_errors
        self.deadline = deadline

    def is_supported(self, error: BaseException) -> bool:
        return isinstance(error, self.supported_errors)

    def delay_for(
        self, error: BaseException, failures: int, remaining: float | None
    ) -> float | None:
        """The sleep before the next attempt, or None if this error must not be retried:
        unsupported, out of attempts, or the sleep would end after the deadline."""
        if not self.is_supported(error) or failures > self.retries:
            return None
        delay = self.backoff.compute(failures)
        if remaining is not None and delay >= remaining:
            return None
        return delay

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        on_error: Callable[[BaseException], Awaitable[None] | None] | None = None,
    ) -> T:
        """Run ``attempt()`` until it succeeds or the policy gives up; the last error is
        raised unchanged. ``on_error`` runs after each retryable failure (a map refresh, a
        reconnect) before the sleep."""
        loop = asyncio.get_running_loop()
        ends_at = None if self.deadline is None else loop.time() + self.deadline
        self.backoff.reset()
        failures = 0
        while True:
            try:
                return await attempt()
            except Exception as error:
                failures += 1
                remaining = None if ends_at is None else ends_at - loop.time()
                delay = self.delay_for(error, failures, remaining)
                if delay is None:
                    raise
                if on_error is not None:
                    result = on_error(error)
                    if result is not None:
                        await result
                if delay > 0:
                    await asyncio.sleep(delay)
