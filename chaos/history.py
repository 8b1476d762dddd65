"""The history of a chaos run, in Jepsen's vocabulary, and its JSONL form on disk.

A client records an ``invoke`` event before it sends a request and exactly one completion
after: ``ok`` (the operation happened), ``fail`` (it definitely did not happen, e.g.
VERSION_MISMATCH or INVALID_ARGUMENT) or ``info`` (unknown: a timeout, a dropped connection;
it may or may not have happened, now or later). Times come from one monotonic clock
(``time.monotonic()`` of the process that runs the workload), in seconds, so intervals of
different clients are comparable.

The checkers work on :class:`Operation`, the pairing of an invoke with its completion: a closed
interval ``[call, ret]`` (``ret`` is infinity for info, since the operation may take effect at
any point after its call), the input ``value`` and the observed ``output``/``version``.

What each ``f`` carries (the contract between workloads and checkers):

=========  ======================  ==============================================
f          invoke ``value``        completion
=========  ======================  ==============================================
read       ``None``                ok: ``value`` observed (``None`` if absent), ``version``
write      the value written       ok: ``version`` assigned
cas        ``[if_version, value]`` ok: ``version`` assigned; fail: VERSION_MISMATCH
delete     ``None``                ok: ``version``
append     the element             ok: ``version``; reads observe a list
add        the element             ok; reads observe a set (a list in JSON)
incr       the delta               ok: ``value`` = the counter after the increment
=========  ======================  ==============================================

Nemesis events (fault start/stop) are kept beside the operations in the same file, so that
one file replays a whole run.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EventType = Literal["invoke", "ok", "fail", "info"]
COMPLETIONS: frozenset[str] = frozenset({"ok", "fail", "info"})
INFINITY = math.inf


def encode_value(value: Any) -> Any:
    """Make a value JSON-safe: bytes become ``{"b64": ...}`` (restored by decode_value)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((encode_value(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    return value


def decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        return {k: decode_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


@dataclass(slots=True)
class Event:
    """One line of the history: an invocation or a completion."""

    index: int
    process: int | str
    type: EventType
    f: str
    key: str | None
    value: Any
    time: float
    version: int | None = None
    consistency: str | None = None
    max_staleness_ms: float | None = None
    error: str | None = None
    final: bool = False
    node: str | None = None  # the member that answered, when the client could tell
    # The sequential specification the operation must be checked under (a name of
    # ``models.MODELS``), given by the workload that generated it: never inferred.
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "op",
            "index": self.index,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": encode_value(self.value),
            "time": self.time,
        }
        for name in ("version", "consistency", "max_staleness_ms", "error", "node", "model"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.final:
            out["final"] = True
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Event:
        if raw.get("type") not in ("invoke", "ok", "fail", "info"):
            raise ValueError(f"history event has a bad type: {raw.get('type')!r}")
        return cls(
            index=int(raw["index"]),
            process=raw["process"],
            type=raw["type"],
            f=str(raw["f"]),
            key=raw.get("key"),
            value=decode_value(raw.get("value")),
            time=float(raw["time"]),
            version=raw.get("version"),
            consistency=raw.get("consistency"),
            max_staleness_ms=raw.get("max_staleness_ms"),
            error=raw.get("error"),
            final=bool(raw.get("final", False)),
            node=raw.get("node"),
            model=raw.get("model"),
        )


@dataclass(frozen=True, slots=True)
class NemesisEvent:
    """A fault starting or stopping (``action``), on which targets, at which monotonic time."""

    time: float
    fault: str
    action: Literal["start", "stop", "heal"]
    targets: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "nemesis",
            "time": self.time,
            "fault": self.fault,
            "action": self.action,
            "targets": list(self.targets),
            "detail": encode_value(self.detail),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NemesisEvent:
        if raw.get("action") not in ("start", "stop", "heal"):
            raise ValueError(f"nemesis event has a bad action: {raw.get('action')!r}")
        return cls(
            time=float(raw["time"]),
            fault=str(raw["fault"]),
            action=raw["action"],
            targets=tuple(raw.get("targets", ())),
            detail=decode_value(raw.get("detail") or {}),
        )


@dataclass(frozen=True, slots=True)
class Operation:
    """An invocation paired with its completion: what the checkers read.

    ``ret`` is ``INFINITY`` for info operations; ``latency`` is ``None`` for them.
    ``output`` is the completion's value (what a read observed, an incr's new value).
    """

    id: int
    process: int | str
    f: str
    key: str | None
    value: Any
    type: Literal["ok", "fail", "info"]
    call: float
    ret: float
    output: Any = None
    version: int | None = None
    consistency: str | None = None
    max_staleness_ms: float | None = None
    error: str | None = None
    final: bool = False
    completed_at: float | None = None
    node: str | None = None
    model: str | None = None  # from the invoke (the workload's model), see Event.model

    @property
    def latency(self) -> float | None:
        return None if self.type == "info" else self.ret - self.call

    def describe(self) -> str:
        """One line for reports: ``p3 cas k1 [4, 'v9'] -> ok v=7 [1.002, 1.010]``."""
        out = f"{self.type}"
        if self.f in ("read", "incr") and self.type == "ok":
            out += f" {self.output!r}"
        if self.version is not None:
            out += f" v={self.version}"
        if self.error:
            out += f" ({self.error})"
        if self.node:
            out += f" @{self.node}"
        ret = "inf" if self.ret == INFINITY else f"{self.ret:.4f}"
        return (
            f"#{self.id} p{self.process} {self.f} {self.key} {self.value!r} -> {out} "
            f"[{self.call:.4f}, {ret}]"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "process": self.process,
            "f": self.f,
            "key": self.key,
            "value": encode_value(self.value),
            "type": self.type,
            "call": self.call,
            "ret": None if self.ret == INFINITY else self.ret,
            "output": encode_value(self.output),
            "version": self.version,
            "error": self.error,
            "node": self.node,
            "model": self.model,
        }


class History:
    """An append-only recorder of events (safe within one asyncio loop: no awaits inside).

    ``invoke`` returns the index of the invocation; the matching ``complete`` names it, so a
    process may have at most one operation in flight (Jepsen's rule: a process whose operation
    ended in info is retired and the worker continues as a fresh process id).
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.events: list[Event] = []
        self.nemesis: list[NemesisEvent] = []
        self._clock = clock
        self._counter = itertools.count()
        self._open: dict[int, Event] = {}

    def now(self) -> float:
        return float(self._clock())

    def invoke(
        self,
        process: int | str,
        f: str,
        key: str | None,
        value: Any = None,
        *,
        consistency: str | None = None,
        max_staleness_ms: float | None = None,
        final: bool = False,
        model: str | None = None,
    ) -> int:
        event = Event(
            index=next(self._counter),
            process=process,
            type="invoke",
            f=f,
            key=key,
            value=value,
            time=self.now(),
            consistency=consistency,
            max_staleness_ms=max_staleness_ms,
            final=final,
            model=model,
        )
        self.events.append(event)
        self._open[event.index] = event
        return event.index

    def complete(
        self,
        invoke_index: int,
        type: Literal["ok", "fail", "info"],
        value: Any = None,
        *,
        version: int | None = None,
        error: str | None = None,
        node: str | None = None,
    ) -> None:
        if type not in COMPLETIONS:
            raise ValueError(f"completion type must be ok, fail or info, not {type!r}")
        inv = self._open.pop(invoke_index)
        self.events.append(
            Event(
                index=next(self._counter),
                process=inv.process,
                type=type,
                f=inv.f,
                key=inv.key,
                value=value,
                time=self.now(),
                version=version,
                consistency=inv.consistency,
                max_staleness_ms=inv.max_staleness_ms,
                error=error,
                final=inv.final,
                node=node,
                model=inv.model,
            )
        )

    def record_nemesis(
        self,
        fault: str,
        action: Literal["start", "stop", "heal"],
        targets: Iterable[str] = (),
        **detail: Any,
    ) -> NemesisEvent:
        event = NemesisEvent(self.now(), fault, action, tuple(targets), dict(detail))
        self.nemesis.append(event)
        return event

    def operations(self) -> list[Operation]:
        return pair_operations(self.events)

    def dump(self, path: str | Path) -> None:
        write_jsonl(path, self.events, self.nemesis)


def pair_operations(events: Iterable[Event]) -> list[Operation]:
    """Pair each invoke with the next completion of the same process.

    An invoke never completed (the run stopped first) is treated as info: it may have
    happened. A completion without an invoke is a recording bug and raises ValueError.
    """
    pending: dict[int | str, Event] = {}
    ops: list[Operation] = []

    def close(inv: Event, done: Event | None) -> None:
        kind = "info" if done is None else done.type
        ret = INFINITY if kind == "info" else done.time  # type: ignore[union-attr]
        ops.append(
            Operation(
                id=len(ops),
                process=inv.process,
                f=inv.f,
                key=inv.key,
                value=inv.value,
                type=kind,  # type: ignore[arg-type]
                call=inv.time,
                ret=ret,
                output=None if done is None else done.value,
                version=None if done is None else done.version,
                consistency=inv.consistency,
                max_staleness_ms=inv.max_staleness_ms,
                error=None if done is None else done.error,
                final=inv.final,
                completed_at=None if done is None else done.time,
                node=None if done is None else done.node,
                model=inv.model,
            )
        )

    for event in events:
        if event.type == "invoke":
            if event.process in pending:
                raise ValueError(
                    f"process {event.process!r} invoked event {event.index} while "
                    f"event {pending[event.process].index} was still in flight"
                )
            pending[event.process] = event
        else:
            inv = pending.pop(event.process, None)
            if inv is None:
                raise ValueError(f"completion {event.index} of process {event.process!r} "
                                 "has no invocation")
            close(inv, event)
    for inv in pending.values():
        close(inv, None)
    ops.sort(key=lambda op: (op.call, op.id))
    return [_renumber(op, i) for i, op in enumerate(ops)]


def _renumber(op: Operation, new_id: int) -> Operation:
    if op.id == new_id:
        return op
    return Operation(
        new_id, op.process, op.f, op.key, op.value, op.type, op.call, op.ret, op.output,
        op.version, op.consistency, op.max_staleness_ms, op.error, op.final, op.completed_at,
        op.node, op.model,
    )


def write_jsonl(
    path: str | Path, events: Iterable[Event], nemesis: Iterable[NemesisEvent] = ()
) -> None:
    """Write events then nemesis events, one JSON object a line (``kind`` tells them apart)."""
    with open(path, "w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
        for nem in nemesis:
            out.write(json.dumps(nem.to_json(), separators=(",", ":")) + "\n")


def iter_jsonl(path: str | Path) -> Iterator[Event | NemesisEvent]:
    with open(path, encoding="utf-8") as src:
        for lineno, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if raw.get("kind") == "nemesis":
                    yield NemesisEvent.from_json(raw)
                else:
                    yield Event.from_json(raw)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a history event: {exc}") from exc


def load_history(path: str | Path) -> History:
    """Load a JSONL history written by :meth:`History.dump`."""
    history = History()
    for item in iter_jsonl(path):
        if isinstance(item, NemesisEvent):
            history.nemesis.append(item)
        else:
            history.events.append(item)
    history._counter = itertools.count(max((e.index for e in history.events), default=-1) + 1)
    return history
