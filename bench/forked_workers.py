"""Client processes forked by a benchmark, each on its own pipe to the parent.

Why: one Python process saturates one core well below what a server can take, so a
benchmark's clients are spread over processes (the load generator's workers, the watch
benchmark's watchers). They share one small protocol: the child sends ``(kind, payload)``
messages (``("ready",)``, ``("done", report)``) or ``("failed", text)``, and the parent
waits for each with a deadline, so a dead or stuck child fails the run instead of hanging it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any


class WorkerError(RuntimeError):
    """A worker process failed, died, or did not report in time."""


@contextmanager
def forked_workers(
    target: Callable[..., None], argument_sets: Sequence[tuple[Any, ...]], name: str
) -> Iterator[list[Connection]]:
    """One forked process per argument tuple, called ``target(*arguments, channel)``; yields
    the parent's ends of the pipes. On exit the pipes are closed first (a child still waiting
    for the parent sees EOF), then every child is joined, terminated if it lingers."""
    context = multiprocessing.get_context("fork")
    channels: list[Connection] = []
    children: list[multiprocessing.process.BaseProcess] = []
    try:
        for index, arguments in enumerate(argument_sets):
            parent_end, child_end = context.Pipe()
            child = context.Process(
                target=target, args=(*arguments, child_end), name=f"{name}-{index}", daemon=True
            )
            child.start()
            child_end.close()
            channels.append(parent_end)
            children.append(child)
        yield channels
    finally:
        for channel in channels:
            channel.close()
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()
                child.join(timeout=5)


def expect(
    channel: Connection,
    kind: str,
    timeout_s: float,
    *,
    who: str = "a worker process",
    error: type[WorkerError] = WorkerError,
) -> Any:
    """The payload of the child's next message, which must be ``kind`` (None if it has none);
    otherwise ``error`` (the caller's own subclass, so its callers keep catching theirs)."""
    if not channel.poll(max(0.0, timeout_s)):
        raise error(f"{who} did not report {kind!r} within {timeout_s:.0f}s")
    try:
        message = channel.recv()
    except EOFError as exc:
        raise error(f"{who} died") from exc
    if message[0] == "failed":
        raise error(f"{who} failed: {message[1]}")
    if message[0] != kind:
        raise error(f"{who} said {message[0]!r}, expected {kind!r}")
    return message[1] if len(message) > 1 else None
