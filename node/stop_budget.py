"""A graceful stop that always ends, and says what it waited for when a step overran.

Why: an orchestrator SIGKILLs a process that outlives its grace period (Kubernetes: 30 s by
default, the chart's too). A SIGKILL loses nothing (every acknowledged write is in the
synced WAL), but it leaves no word of what the stop was waiting for, and it turns a rolling
update's clean exit into a crash. CI once saw exactly that: a primary handed its shard over
in 122 ms, then did not exit for 30 s. The stop is a chain of steps (the stop hooks: the
handoff, replication, the coordinator link, the migration tasks; then the HTTP runner's
drain; then the store's close), and aiohttp's own shutdown alone can take three times
``shutdown_grace_s`` when a long-lived handler does not end by itself.

So a stop has one budget (:class:`StopBudget`), below the orchestrator's grace period, and
each step gets a bound within it. A step still running at its bound is logged with the
stack of the coroutine it is stuck in, cancelled, and left behind; the next step runs. The
store's close always gets its reserved share. After the stop, :func:`cancel_leftovers`
cancels what is still running and waits a bounded time: ``asyncio.run`` would otherwise wait
for every task without limit, and a task that swallows its cancellation would hang the exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from shardkv.cluster.structured_log import log_fields

logger = logging.getLogger("shardkv.node.stop")

# The deepest frames of a stuck step that are logged (the innermost are the telling ones).
STACK_FRAMES = 12


def task_stack(task: asyncio.Task[object]) -> str:
    """Where a pending task is suspended: its chain of awaits, outermost first, ending in
    what the innermost coroutine waits on (a future, a lock's waiter, a sleep)."""
    lines: list[str] = []
    awaitable: object = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            lines.append(f"  awaiting {awaitable!r}")
            break
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return "\n".join(lines[-STACK_FRAMES:])


class StopBudget:
    """The time a graceful stop may take, shared out among its steps.

    ``total_s`` is the whole stop; ``reserve_s`` is kept back for the last step (the store's
    close, which syncs the WAL), so an overrun earlier never takes its time."""

    def __init__(self, total_s: float, *, reserve_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + total_s
        self.reserve_s = reserve_s
        self.overran: list[str] = []

    def remaining(self, *, last: bool = False) -> float:
        """Seconds left for a step (the reserve is only the last step's)."""
        left = self.deadline - self._clock()
        return max(0.0, left if last else left - self.reserve_s)

    async def step(self, name: str, work: Awaitable[object], bound_s: float, *,
                   last: bool = False) -> bool:
        """Run one step for at most ``bound_s`` (and what is left of the budget).

        True if it finished (an exception it raised is logged, not raised: a stop goes on);
        False if it overran: then it is logged with its stack, cancelled and not awaited."""
        task = asyncio.ensure_future(work)
        seconds = min(bound_s, self.remaining(last=last))
        started = self._clock()
        done, _ = await asyncio.wait({task}, timeout=seconds)
        took = self._clock() - started
        if task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error("stop step %s failed; stopping anyway", name,
                             exc_info=task.exception(), extra=log_fields(step=name))
            elif took >= 1.0:
                logger.info("stop step %s took %.1fs", name, took,
                            extra=log_fields(step=name, took_s=round(took, 3)))
            return True
        self.overran.append(name)
        logger.warning(
            "stop step %s still running after %.1fs; going on without it", name, took,
            extra=log_fields(step=name, waited_s=round(took, 3), stack=task_stack(task)))
        task.cancel()
        return False


async def cancel_leftovers(timeout_s: float) -> list[str]:
    """Cancel every task but the caller and wait at most ``timeout_s`` for them to end.

    Returns the stacks of those that did not end (logged): the caller should then exit the
    process without waiting for them (``os._exit``), as ``asyncio.run`` would wait forever."""
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return []
    _, still = await asyncio.wait(pending, timeout=timeout_s)
    stuck = []
    for task in still:
        stack = task_stack(task)
        stuck.append(f"{task.get_name()}:\n{stack}")
        logger.warning("a task did not end when cancelled at exit", extra=log_fields(
            task=task.get_name(), stack=stack))
    return stuck
