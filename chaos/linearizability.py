"""Linearizability checking: Wing & Gong's search with Lowe's memoization, per key.

The history of one key is a list of call and return entries in time order (a call sorts before
a return at the same instant, so touching intervals count as concurrent: the permissive
choice, which never reports a false anomaly). The search walks that list keeping the model
state. At a call entry it tries to linearize that operation now: if the model accepts it and
the pair (set of linearized operations as a bitmask, state) has not been seen before, the
operation and its return entry are lifted out of the list and the search restarts from the
head. Reaching a return entry means its operation was not linearized before it returned:
backtrack (pop the last choice, put its entries back, try the next call after it). Only calls
that precede the first remaining return are ever tried: the "just-in-time" pruning that makes
the search linear on histories with little concurrency. The (bitmask, state) cache is what
keeps it from being exponential when the same configuration is reachable by many orders.

Info operations (unknown outcome) return at infinity, so they may be placed at any point after
their call, or never: the search succeeds once every operation with a known outcome is placed.
They are kept out of the entry list and offered as candidates from their call on, and those
with the same ``f`` and input are placed in call order only (they are interchangeable).

Keys are independent under linearizability (it is compositional, Herlihy & Wing), so each
key is checked on its own, which is both faster and what makes an illegal window small.

On an illegal history the report names the smallest window that could not be linearized:
among all the configurations the search reached, the deepest one, its state, the last few
operations it had linearized, and the operations pending at the return it could not pass
(the operation that returned first, and every operation concurrent with it). Those are the
operations among which no order satisfies the model.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from shardkv.chaos.history import INFINITY, Operation
from shardkv.chaos.models import Model, State

Verdict = Literal["ok", "illegal", "unknown"]


@dataclass
class IllegalWindow:
    """Where the search got stuck, in the deepest configuration it reached."""

    key: str | None
    stuck_on: Operation
    state: Any
    linearized_tail: list[Operation]
    pending: list[Operation]

    def describe(self) -> str:
        lines = [f"key {self.key!r}: no linearization of these operations exists"]
        lines.append(f"  model state at the deepest point the search reached: {self.state!r}")
        if self.linearized_tail:
            lines.append("  last operations linearized before the window:")
            lines.extend(f"    {op.describe()}" for op in self.linearized_tail)
        lines.append("  the operation that could not be placed (*) and those concurrent with it:")
        lines.extend(
            f"  {'*' if op.id == self.stuck_on.id else ' '} {op.describe()}" for op in self.pending
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stuck_on": self.stuck_on.to_json(),
            "state": repr(self.state),
            "linearized_tail": [op.to_json() for op in self.linearized_tail],
            "pending": [op.to_json() for op in self.pending],
            "text": self.describe(),
        }


@dataclass
class KeyResult:
    key: str | None
    verdict: Verdict
    operations: int
    explored: int
    window: IllegalWindow | None = None


@dataclass
class LinearizabilityResult:
    verdict: Verdict
    model: str
    keys: dict[str | None, KeyResult] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def illegal(self) -> list[KeyResult]:
        return [r for r in self.keys.values() if r.verdict == "illegal"]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "model": self.model,
            "keys_checked": len(self.keys),
            "operations": sum(r.operations for r in self.keys.values()),
            "unknown_keys": [k for k, r in self.keys.items() if r.verdict == "unknown"],
            "illegal": [r.window.to_json() for r in self.illegal if r.window is not None],
            "elapsed_s": round(self.elapsed_s, 4),
        }


class _Budget:
    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def check_operations(
    ops: list[Operation], model: Model, *, key: str | None = None, budget: _Budget | None = None
) -> KeyResult:
    """Check one key's operations (already filtered to one key) against ``model``."""
    ops = model.prepare(list(ops))
    n = len(ops)
    if n == 0:
        return KeyResult(key, "ok", 0, 0)
    search = _Search(ops, model, budget)
    verdict = search.run()
    window = _window(key, ops, search.best) if verdict == "illegal" else None
    return KeyResult(key, verdict, n, search.explored, window)


class _Search:
    """The depth-first search over linearization points for one key.

    Operations with a known outcome live in a doubly linked list of call and return entries
    in time order (a call before a return at the same instant). The candidates of a
    configuration are the calls before the first remaining return, plus the info operations
    invoked by then: an info operation returns at infinity, so it stays a candidate forever
    and is kept out of the list, whose scan it would otherwise lengthen at every step.
    Info operations with the same ``f`` and input are interchangeable, so each such class is
    placed in call order only (a pointer per class instead of every subset).
    """

    def __init__(self, ops: list[Operation], model: Model, budget: _Budget | None) -> None:
        self.ops = ops
        self.model = model
        self.budget = budget
        self.explored = 0
        self.best: tuple[int, State, list[int]] | None = None
        known = [i for i, op in enumerate(ops) if op.ret != INFINITY]
        entries = sorted(
            [(ops[i].call, 0, 2 * i) for i in known] + [(ops[i].ret, 1, 2 * i + 1) for i in known]
        )
        # Positions 1..m in the list; 0 is the head sentinel; -1 is the end.
        self.entry_at = [-1] + [e for _, _, e in entries]
        size = len(self.entry_at)
        self.pos_of: dict[int, int] = {e: p for p, e in enumerate(self.entry_at) if p}
        self.nxt = [p + 1 if p + 1 < size else -1 for p in range(size)]
        self.prv = [p - 1 for p in range(size)]
        classes: dict[tuple[str, Any], list[int]] = {}
        for i, op in enumerate(ops):
            if op.ret == INFINITY:
                classes.setdefault((op.f, _freeze(op.value)), []).append(i)
        self.info_classes = [sorted(members, key=lambda i: ops[i].call)
                             for members in classes.values()]
        self.class_of = {i: c for c, members in enumerate(self.info_classes) for i in members}
        self.placed_in_class = [0] * len(self.info_classes)
        self.info_last = bool(getattr(model, "info_last", False))

    def _lift(self, op_index: int) -> None:
        if op_index in self.class_of:
            self.placed_in_class[self.class_of[op_index]] += 1
            return
        nxt, prv = self.nxt, self.prv
        for p in (self.pos_of[2 * op_index], self.pos_of[2 * op_index + 1]):
            a, b = prv[p], nxt[p]
            nxt[a] = b
            if b != -1:
                prv[b] = a

    def _unlift(self, op_index: int) -> None:
        if op_index in self.class_of:
            self.placed_in_class[self.class_of[op_index]] -= 1
            return
        nxt, prv = self.nxt, self.prv
        for p in (self.pos_of[2 * op_index + 1], self.pos_of[2 * op_index]):
            a, b = prv[p], nxt[p]
            nxt[a] = p
            if b != -1:
                prv[b] = p

    def _candidates(self) -> tuple[list[int], int] | None:
        """(candidate op indices, the op of the first remaining return), or None when every
        operation with a known outcome is placed (the history is linearizable)."""
        out: list[int] = []
        p = self.nxt[0]
        while p != -1:
            entry = self.entry_at[p]
            if entry % 2:
                break
            out.append(entry >> 1)
            p = self.nxt[p]
        if p == -1:
            return None
        first_return = self.entry_at[p] >> 1
        frontier = self.ops[first_return].ret
        for c, members in enumerate(self.info_classes):
            j = self.placed_in_class[c]
            if j < len(members) and self.ops[members[j]].call <= frontier:
                out.append(members[j])
        if self.info_classes and not self.info_last:
            # Call order suits models where an info operation's position matters (a write
            # that reads observed). Commutative ones (increments) do better tried last.
            out.sort(key=lambda i: self.ops[i].call)
        return out, first_return

    def run(self) -> Verdict:
        ops, model = self.ops, self.model
        cache: set[tuple[int, State]] = set()
        state = model.init()
        linearized = 0
        first = self._candidates()
        if first is None:
            return "ok"
        # Frames: (candidates, next index to try, op placed to reach this frame, state before).
        frames: list[tuple[list[int], int, int, State]] = [(first[0], 0, -1, state)]
        self.best = (first[1], state, [])
        while True:
            self.explored += 1
            if (
                self.budget is not None
                and self.explored % 2048 == 0
                and self.budget.expired()
            ):
                return "unknown"
            candidates, i, placed, before = frames[-1]
            if i >= len(candidates):  # nothing can come next here: backtrack
                if placed == -1:
                    return "illegal"
                frames.pop()
                self._unlift(placed)
                linearized &= ~(1 << placed)
                state = before
                parent = frames[-1]
                frames[-1] = (parent[0], parent[1] + 1, parent[2], parent[3])
                continue
            op_index = candidates[i]
            accepted, new_state = model.step(state, ops[op_index])
            config = (linearized | (1 << op_index), new_state)
            if not accepted or config in cache:
                frames[-1] = (candidates, i + 1, placed, before)
                continue
            cache.add(config)
            self._lift(op_index)
            following = self._candidates()
            if following is None:
                return "ok"
            linearized = config[0]
            frames.append((following[0], 0, op_index, state))
            state = new_state
            if len(frames) - 1 > len(self.best[2]):
                self.best = (following[1], state, [f[2] for f in frames[1:]])


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def _window(
    key: str | None, ops: list[Operation], best: tuple[int, State, list[int]] | None
) -> IllegalWindow:
    assert best is not None
    stuck_index, state, order = best
    stuck = ops[stuck_index]
    # The window: the stuck operation and every operation concurrent with it (linearized in
    # that attempt or not), since those are the orders that were tried and failed; before
    # them, the tail of the prefix that was linearized, which sets the state.
    concurrent = [
        op for i, op in enumerate(ops)
        if i == stuck_index or (op.call <= stuck.ret and op.ret >= stuck.call)
    ]
    concurrent.sort(key=lambda op: (op.call, op.id))
    in_window = {op.id for op in concurrent}
    tail = [ops[i] for i in order if ops[i].id not in in_window][-3:]
    pending = concurrent
    return IllegalWindow(key, stuck, state, tail, pending)


def check_history(
    ops: Iterable[Operation],
    model: Model,
    *,
    time_budget_s: float | None = 30.0,
    fs: Iterable[str] | None = None,
) -> LinearizabilityResult:
    """Check every key's operations (optionally only those whose ``f`` is in ``fs``).

    The verdict is ``illegal`` if any key is illegal, else ``unknown`` if any key ran out of
    the time budget (shared by all keys), else ``ok``.
    """
    started = time.monotonic()
    budget = _Budget(None if time_budget_s is None else started + time_budget_s)
    wanted = None if fs is None else frozenset(fs)
    by_key: dict[str | None, list[Operation]] = defaultdict(list)
    for op in ops:
        if wanted is None or op.f in wanted:
            by_key[op.key].append(op)
    result = LinearizabilityResult("ok", model.name)
    for key in sorted(by_key, key=lambda k: (k is None, str(k))):
        if budget.expired():
            result.keys[key] = KeyResult(key, "unknown", len(by_key[key]), 0)
            continue
        result.keys[key] = check_operations(by_key[key], model, key=key, budget=budget)
    verdicts = {r.verdict for r in result.keys.values()}
    result.verdict = "illegal" if "illegal" in verdicts else (
        "unknown" if "unknown" in verdicts else "ok"
    )
    result.elapsed_s = time.monotonic() - started
    return result


__all__ = [
    "INFINITY",
    "IllegalWindow",
    "KeyResult",
    "LinearizabilityResult",
    "check_history",
    "check_operations",
]
