"""Synthetic histories: what the checkers are tested (and can be self-tested) against.

:func:`op` builds one operation by hand, for known-good and known-bad examples.
:func:`linearizable_history` runs a random workload sequentially against a reference
implementation of the store, gives each operation a linearization point on a time line, and
then widens every operation into an interval that contains its point, so operations overlap
as they would under real concurrency. Whatever the widths, the result is linearizable by
construction: a checker that rejects one is wrong. Some operations end as info (their return
at infinity); an info operation may have taken effect or not, both are generated.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from shardkv.chaos.history import INFINITY, Operation

Kind = Literal["register", "versioned-register", "append", "set", "counter"]


def op(
    id: int,
    f: str,
    value: Any = None,
    call: float = 0.0,
    ret: float | None = None,
    *,
    type: Literal["ok", "fail", "info"] = "ok",
    output: Any = None,
    version: int | None = None,
    key: str | None = "k",
    process: int | str | None = None,
    consistency: str | None = None,
    max_staleness_ms: float | None = None,
    error: str | None = None,
    final: bool = False,
) -> Operation:
    """One operation; ``ret`` defaults to ``call + 1`` (infinity for info)."""
    if type == "info":
        ret = INFINITY
    elif ret is None:
        ret = call + 1.0
    return Operation(
        id=id,
        process=id if process is None else process,
        f=f,
        key=key,
        value=value,
        type=type,
        call=call,
        ret=ret,
        output=output,
        version=version,
        consistency=consistency,
        max_staleness_ms=max_staleness_ms,
        error=error,
        final=final,
        completed_at=None if type == "info" else ret,
    )


class _Store:
    """The reference: one key's true state as a sequential store would hold it."""

    def __init__(self, kind: Kind, rng: random.Random) -> None:
        self.kind = kind
        self.rng = rng
        self.value: Any = [] if kind == "append" else (0 if kind == "counter" else None)
        self.members: set[int] = set()
        self.version = 0
        self.lsn = 0
        self.unique = 0

    def _next_version(self) -> int:
        self.lsn += self.rng.randint(1, 3)  # other keys of the shard use LSNs too
        return self.lsn

    def random_op(self) -> tuple[str, Any]:
        r = self.rng.random()
        self.unique += 1
        if r < 0.4:
            return "read", None
        if self.kind in ("register", "versioned-register"):
            if self.kind == "versioned-register" and r < 0.7:
                expected = self.version if self.rng.random() < 0.7 else self.version + 1
                return "cas", [expected, f"v{self.unique}"]
            return ("delete", None) if r > 0.95 else ("write", f"v{self.unique}")
        if self.kind == "append":
            return "append", self.unique
        if self.kind == "set":
            return "add", self.unique
        return "incr", 1 if self.rng.random() < 0.8 else 2

    def apply(self, f: str, value: Any) -> tuple[bool, Any, int | None]:
        """Run one operation: (took effect, output, version)."""
        if f == "read":
            if self.kind == "set":
                return True, sorted(self.members), None
            if self.kind == "append":
                return True, list(self.value), None
            return True, self.value, (self.version or None) if self.value is not None else None
        if f == "cas" and value[0] != self.version:
            return False, None, None
        if f in ("write", "cas", "delete"):
            self.value = None if f == "delete" else (value if f == "write" else value[1])
            self.version = self._next_version()
            return True, None, self.version
        if f == "append":
            self.value.append(value)
            return True, None, self._next_version()
        if f == "add":
            self.members.add(value)
            return True, None, None
        if f == "incr":
            self.value += value
            return True, self.value, self._next_version()
        raise ValueError(f)


def linearizable_history(
    kind: Kind,
    seed: int,
    *,
    n_ops: int = 30,
    max_width: float = 3.0,
    info_rate: float = 0.1,
    key: str = "k",
) -> list[Operation]:
    """A random history of ``n_ops`` operations on one key, linearizable by construction.

    Linearization points are at 1, 2, 3, ...; each operation's interval contains its point and
    extends up to ``max_width`` to each side. A CAS whose expected version is wrong ends as
    fail (VERSION_MISMATCH), as shardkv answers it. Info operations may or may not take effect.
    """
    rng = random.Random(seed)
    store = _Store(kind, rng)
    ops: list[Operation] = []
    for i in range(n_ops):
        point = float(i + 1)
        f, value = store.random_op()
        call = point - rng.uniform(0.0, max_width)
        ret = point + rng.uniform(0.0, max_width)
        if f != "read" and rng.random() < info_rate:
            if rng.random() < 0.5:  # took effect at its point
                store.apply(f, value)
            ops.append(op(i, f, value, call, type="info", key=key))
            continue
        happened, output, version = store.apply(f, value)
        if not happened:
            ops.append(op(i, f, value, call, ret, type="fail", error="VERSION_MISMATCH", key=key))
            continue
        if f in ("write", "cas", "delete", "append"):
            ops.append(op(i, f, value, call, ret, version=version, key=key))
        else:
            ops.append(op(i, f, value, call, ret, output=output, version=version, key=key))
    ops.sort(key=lambda o: o.call)
    return ops
