"""Awaiting a condition with a deadline: what a test does instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded machine (the test flakes) or too long on an idle
one (the suite crawls); polling a condition until a deadline is neither. The deadline is a
generous bound on "never happens", not a claim about speed: speed belongs in bench/.
Importable from every test folder (``tests/`` is on ``sys.path`` through its conftest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(condition: Callable[[], T], *, within_s: float = 10.0,
                     what: str = "the condition", poll_s: float = 0.005) -> T:
    """Poll ``condition()`` (a plain callable) until it returns something truthy; return that.
    Raises AssertionError naming ``what`` after ``within_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        result = condition()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(poll_s)


async def eventually_async(check: Callable[[], Awaitable[T]], *, within_s: float = 10.0,
                           what: str = "the condition", poll_s: float = 0.05) -> T:
    """As ``eventually`` for a check that must be awaited (an HTTP call, a query)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(poll_s)
