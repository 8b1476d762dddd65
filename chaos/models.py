"""Sequential specifications the linearizability checker replays operations against.

A model is Porcupine's shape: an initial state and a pure ``step(state, op)`` that answers
whether ``op`` (with its observed output) is a legal next operation and the state after it.
States are hashable, because the checker memoizes (linearized set, state) pairs.

An info operation's output is unknown: ``step`` accepts any output for it and applies its
effect (an info write that never took effect is equivalent to one linearized after
everything else, which the search is free to choose, since info returns at infinity).

shardkv's versions are shard LSNs: they grow with every write, but a key's next version is
not predictable (other keys of the shard consume LSNs). The versioned register therefore
checks that versions strictly grow along the linearization, that reads see exactly the version
of the write they follow, and that a compare-and-swap succeeds only at its expected version.
One exception: an online migration re-stamps every key it moves with a version of the target
shard, above a floor ``J`` = (the sources' highest LSN) + 2^32 (docs/resharding.md, "Target
floor"), so the moved key's version lands in a higher block of ``MIGRATION_VERSION_GAP``
(2^32) versions than any version it had on its source. A read may see the current value
under a version of a higher block, which becomes the key's version. A jump within the same
block with the same value stays illegal (a write applied twice looks like that). The rule
assumes no source gets within a migration's writes of a block boundary (4 billion writes).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from shardkv.chaos.history import Operation

State = Hashable


class Model(Protocol):
    """What the checker needs from a sequential specification."""

    name: str

    def init(self) -> State: ...

    def step(self, state: State, op: Operation) -> tuple[bool, State]: ...

    def prepare(self, ops: list[Operation]) -> list[Operation]:
        """The operations the checker must place: fail operations never happened, an info
        read constrains nothing, and (where the model can tell) an info operation whose
        effect no read observed is equivalent to one linearized after everything."""
        ...


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, set):
        return frozenset(value)
    return value


_READ_ONLY = frozenset({"read"})
MIGRATION_VERSION_GAP = 1 << 32  # docs/resharding.md: the target's floor above its sources


def _relevant(op: Operation) -> bool:
    if op.type == "fail":
        return False
    return not (op.type == "info" and op.f in _READ_ONLY)


def _keep_relevant(ops: list[Operation]) -> list[Operation]:
    return [op for op in ops if _relevant(op)]


def _drop_unobserved_info(ops: list[Operation], writer: str) -> list[Operation]:
    """For collections of unique elements: an info ``writer`` op whose element appears in no
    successful read may be placed after every read, so it constrains nothing. Dropping it
    removes a candidate the search would otherwise retry at every step."""
    seen: set[Any] = set()
    for op in ops:
        if op.f == "read" and op.type == "ok":
            seen.update(_hashable(v) for v in (op.output or []))
    return [
        op
        for op in _keep_relevant(ops)
        if not (op.type == "info" and op.f == writer and _hashable(op.value) not in seen)
    ]


@dataclass(frozen=True)
class RegisterModel:
    """A plain read/write register (versions ignored). Absent is ``None``."""

    name: str = "register"
    initial: Any = None

    def init(self) -> State:
        return _hashable(self.initial)

    def prepare(self, ops: list[Operation]) -> list[Operation]:
        return _keep_relevant(ops)

    def step(self, state: State, op: Operation) -> tuple[bool, State]:
        if op.f == "read":
            return _hashable(op.output) == state, state
        if op.f == "write":
            return True, _hashable(op.value)
        if op.f == "delete":
            return True, None
        raise ValueError(f"register model has no operation {op.f!r}")


@dataclass(frozen=True)
class VersionedRegisterModel:
    """shardkv's register: reads return ``(value, version)``, writes return a version, and
    ``cas`` is ``put(if_version=E)``.

    State is ``(value, version, floor)``: ``version`` is the version of the current value, or
    ``None`` when it came from an info write (the version it got is unknown); ``floor`` is the
    highest version known so far, which every later write must exceed.
    """

    name: str = "versioned-register"

    def init(self) -> State:
        return (None, 0, 0)

    def prepare(self, ops: list[Operation]) -> list[Operation]:
        return _keep_relevant(ops)

    def step(self, state: State, op: Operation) -> tuple[bool, State]:
        value, version, floor = state  # type: ignore[misc]
        f = op.f
        if f == "read":
            seen = _hashable(op.output)
            if seen != value:
                return False, state
            if seen is None:  # absent: NOT_FOUND carries no version to compare
                return True, state
            if version is None:  # learn the version an info write got
                if op.version is None or op.version <= floor:
                    return op.version is None, state
                return True, (value, op.version, op.version)
            if (op.version is not None
                    and op.version // MIGRATION_VERSION_GAP > version // MIGRATION_VERSION_GAP):
                return True, (value, op.version, op.version)  # moved by a migration
            return op.version is None or op.version == version, state
        if f in ("write", "delete", "cas"):
            if f == "cas":
                expected = op.value[0]
                if version is None:
                    if expected <= floor:
                        return False, state
                    floor = expected
                elif expected != version:
                    return False, state
                new_value = _hashable(op.value[1])
            else:
                new_value = None if f == "delete" else _hashable(op.value)
            if op.type == "info" or op.version is None:
                return True, (new_value, None, floor)
            if op.version <= floor:
                return False, state
            return True, (new_value, op.version, op.version)
        raise ValueError(f"versioned register model has no operation {f!r}")


@dataclass(frozen=True)
class AppendModel:
    """A list that grows by ``append``; a read observes the whole list in order.

    State is ``(elements, floor)``: an acknowledged append carries its version, which must
    exceed every version before it. That is what shardkv guarantees, and it is also what keeps
    the search from trying every order of concurrent appends (their versions fix the order).
    """

    name: str = "append"

    def init(self) -> State:
        return ((), 0)

    def prepare(self, ops: list[Operation]) -> list[Operation]:
        return _drop_unobserved_info(ops, "append")

    def step(self, state: State, op: Operation) -> tuple[bool, State]:
        elements, floor = state  # type: ignore[misc]
        if op.f == "append":
            grown = (*elements, _hashable(op.value))
            if op.type == "info" or op.version is None:
                return True, (grown, floor)
            if op.version <= floor:
                return False, state
            return True, (grown, op.version)
        if op.f == "read":
            return _hashable(list(op.output or [])) == elements, state
        raise ValueError(f"append model has no operation {op.f!r}")


@dataclass(frozen=True)
class SetModel:
    """A grow-only set: ``add`` an element; a read observes the set (order ignored)."""

    name: str = "set"

    def init(self) -> State:
        return frozenset()

    def prepare(self, ops: list[Operation]) -> list[Operation]:
        return _drop_unobserved_info(ops, "add")

    def step(self, state: State, op: Operation) -> tuple[bool, State]:
        if op.f == "add":
            return True, state | {_hashable(op.value)}  # type: ignore[operator]
        if op.f == "read":
            return frozenset(_hashable(v) for v in (op.output or [])) == state, state
        raise ValueError(f"set model has no operation {op.f!r}")


@dataclass(frozen=True)
class CounterModel:
    """An integer counter: ``incr(delta)`` returns the new value; a read returns the value
    (absent reads as ``None`` and equals 0)."""

    name: str = "counter"
    # Increments commute: the search is faster trying info increments after the others.
    info_last: bool = True

    def init(self) -> State:
        return 0

    def prepare(self, ops: list[Operation]) -> list[Operation]:
        return _keep_relevant(ops)

    def step(self, state: State, op: Operation) -> tuple[bool, State]:
        if op.f == "incr":
            new = state + int(op.value if op.value is not None else 1)  # type: ignore[operator]
            if op.type == "info" or op.output is None:
                return True, new
            return int(op.output) == new, new
        if op.f == "read":
            return int(op.output or 0) == state, state
        raise ValueError(f"counter model has no operation {op.f!r}")


# The operations each model understands; others on the same key are not its business.
OPERATIONS: dict[str, frozenset[str]] = {
    "register": frozenset({"read", "write", "delete"}),
    "versioned-register": frozenset({"read", "write", "cas", "delete"}),
    "append": frozenset({"read", "append"}),
    "set": frozenset({"read", "add"}),
    "counter": frozenset({"read", "incr"}),
}

MODELS: dict[str, Model] = {
    m.name: m
    for m in (RegisterModel(), VersionedRegisterModel(), AppendModel(), SetModel(), CounterModel())
}
