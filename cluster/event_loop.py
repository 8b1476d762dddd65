"""The event loop every shardkv process runs on: uvloop on Linux, asyncio's own elsewhere.

Why: a node spends a large share of each request in the event loop itself (socket reads and
writes, callbacks, futures), and uvloop (libuv, in Cython) does that work in a fraction of the
CPU of asyncio's pure-Python selector loop. docs/performance.md has the figures
(``python -m bench.cost_bench --ab uvloop``). Nothing in shardkv depends on which loop runs:
it is a drop-in ``asyncio.AbstractEventLoop``.

``SHARDKV_UVLOOP=0`` (or ``off``/``false``/``no``) turns it off for a process and its
children, to compare or to rule it out when chasing a problem; an unknown value is an error,
not silently ignored. Without uvloop installed (not Linux, or a trimmed install) the default
loop runs, with no warning: it is an optimisation, never a requirement.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "SHARDKV_UVLOOP"
_ON = frozenset({"", "1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})


def uvloop_wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether ``SHARDKV_UVLOOP`` allows uvloop (the default: yes)."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise ValueError(f"{ENV} must be 1/on or 0/off, got {raw!r}")


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` would use in this process."""
    if not uvloop_wanted():
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_name` names (the process's entry point
    calls this once; everything inside just uses asyncio)."""
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def new_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind :func:`loop_name` names, for a thread that runs a loop of its
    own (``SyncClient``): a blocking caller gets the cheaper loop without knowing of it."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def running_loop_name() -> str:
    """The loop running now (for ``/v1/status`` and the benchmarks' records)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
