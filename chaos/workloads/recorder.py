"""Turning client calls into history events, and a client error into ``fail`` or ``info``.

Jepsen's rule, applied to shardkv's error tree: an operation is ``fail`` only when it
*definitely* did not take effect, ``info`` when it may have. For reads the distinction does
not matter (a read has no effect), so every failed read is ``fail``. For writes:

- definite refusals are ``fail``: ``VERSION_MISMATCH``, ``INVALID_ARGUMENT``, ``TOO_LARGE``,
  ``NOT_FOUND``, ``UNAUTHORIZED``, the redirects (``NOT_PRIMARY``, ``STALE_MAP``,
  ``STALE_EPOCH``: the node refused before executing) and a connection that failed before the
  request was written (``ConnectionFailed.maybe_executed`` is False);
- everything else (``TIMEOUT``, ``UNAVAILABLE`` after the request reached a primary, a
  connection dropped mid-request, an unexpected exception) is ``info``.

This classification is only sound if the client never silently retried a request that may
have executed, so workload clients are built with ``Retry(retries=0)`` (see
:func:`workload_client`); redirects still hop, since a redirected request was not executed.

A process has one operation in flight; after an ``info`` it is retired and the worker
continues under a fresh process id (:class:`Process`).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from shardkv.chaos.history import History
from shardkv.client import Client, ConnectionFailed, NoBackoff, Retry
from shardkv.cluster.errors import (
    InvalidArgument,
    NotFound,
    NotPrimary,
    StaleEpoch,
    StaleMap,
    TooLarge,
    Unauthorized,
    UnknownOp,
    VersionMismatch,
)

DEFINITE_REFUSALS: tuple[type[BaseException], ...] = (
    VersionMismatch, InvalidArgument, TooLarge, NotFound, Unauthorized, UnknownOp,
    NotPrimary, StaleMap, StaleEpoch,
)


def classify_error(error: BaseException, *, read: bool) -> Literal["fail", "info"]:
    """``fail`` when the operation definitely did not take effect, else ``info``."""
    if read:
        return "fail"
    if isinstance(error, DEFINITE_REFUSALS):
        return "fail"
    if isinstance(error, ConnectionFailed) and not error.maybe_executed:
        return "fail"
    return "info"


def error_code(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return str(code) if code is not None else type(error).__name__


@dataclass(frozen=True)
class Outcome:
    """What a successful call observed: the completion's ``value`` and ``version``."""

    value: Any = None
    version: int | None = None
    node: str | None = None  # which member answered (reads), when known


RETRY_MODES = ("off", "default")


def workload_client(endpoints: list[str], *, direct: bool, timeout: float,
                    retries: str = "off") -> Client:
    """The workloads' client, with a short per-call timeout so a partition produces ``info``
    operations rather than a stuck worker.

    ``retries="off"``: the client never retries on its own (see the module docstring).
    ``retries="default"``: the client users run, with its default retry policy. Its outcomes
    are recorded as it reports them: a retried write that the client reports ``ok`` must have
    happened once, and a definite refusal must mean it did not happen at all; when the system
    breaks that promise (a retry applied twice) the checkers see it, which is the point."""
    if retries not in RETRY_MODES:
        raise ValueError(f"retries must be one of {RETRY_MODES}, not {retries!r}")
    retry = Retry(NoBackoff(), retries=0) if retries == "off" else None
    if retry is None:
        if direct:
            return Client(nodes=endpoints, timeout=timeout, connect_timeout=timeout)
        return Client(endpoints, timeout=timeout, connect_timeout=timeout)
    if direct:
        return Client(nodes=endpoints, timeout=timeout, retry=retry, connect_timeout=timeout)
    return Client(endpoints, timeout=timeout, retry=retry, connect_timeout=timeout)


def patient_client(endpoints: list[str], *, direct: bool, timeout: float = 5.0) -> Client:
    """For final reads and health probes: reads are idempotent, so retries are safe."""
    if direct:
        return Client(nodes=endpoints, timeout=timeout)
    return Client(endpoints, timeout=timeout)


class Recorder:
    """Runs one client call as one history operation."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._ids = itertools.count()
        self.counts = {"ok": 0, "fail": 0, "info": 0}

    def new_process(self) -> Process:
        return Process(self, next(self._ids))

    async def record(
        self,
        process: Process,
        f: str,
        key: str,
        value: Any,
        call: Callable[[], Awaitable[Outcome]],
        *,
        model: str,
        consistency: str | None = None,
        max_staleness_ms: float | None = None,
        final: bool = False,
    ) -> Outcome | None:
        """Invoke, run ``call``, complete; returns the outcome, or None if it failed.
        ``model`` is the specification the operation is checked under (the workload's).
        Cancellation (the run ending) leaves the operation open: the history treats an
        invoke without completion as info, which is exactly what it is."""
        index = self.history.invoke(
            process.id, f, key, value, consistency=consistency,
            max_staleness_ms=max_staleness_ms, final=final, model=model,
        )
        try:
            outcome = await call()
        except Exception as error:
            kind = classify_error(error, read=f == "read")
            self.history.complete(index, kind, error=error_code(error))
            self.counts[kind] += 1
            if kind == "info":
                process.retire()
            return None
        self.history.complete(index, "ok", outcome.value, version=outcome.version,
                              node=outcome.node)
        self.counts["ok"] += 1
        return outcome


class Process:
    """A logical client process: one operation in flight, a fresh id after an info."""

    def __init__(self, recorder: Recorder, process_id: int) -> None:
        self._recorder = recorder
        self.id = process_id

    def retire(self) -> None:
        self.id = next(self._recorder._ids)
