"""Pure decisions of the write path: conditions, counters, and batch plans.

Everything here is a function of (request, current state) -> (mutations, answer) or an error,
with no I/O and no clock of its own. The Store calls these between reading the current state
and submitting the entry, under its write lock, so the decision and the LSN order agree.
Keeping them pure keeps them testable and keeps ``store.py`` about sequencing.

"Current state" is always the *live* state: an item whose ``expires_at`` has passed counts as
absent, so ``if_absent`` succeeds on an expired key and ``if_version`` sees version 0 there.
Version 0 means "absent" in conditions (LSNs start at 1), so ``if_version=0`` is a create-only
condition, like etcd's ``mod_revision == 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from shardkv.cluster.errors import InvalidArgument, ShardKVError, TooLarge, VersionMismatch
from shardkv.cluster.limits import Limits, as_key, as_ttl, as_value, as_version
from shardkv.node.storage.compression import decode_value, encode_value
from shardkv.node.storage.engines.engine import StoredItem
from shardkv.node.storage.sessions import Outcome
from shardkv.node.storage.store_model import BatchOp
from shardkv.node.wal.record import Mutation, MutationKind

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_MAX_COUNTER_TEXT = 20  # len("-9223372036854775808")


def live(item: StoredItem | None, now: float) -> StoredItem | None:
    """The item if it is visible at ``now``; None if absent or expired."""
    if item is None or (item.expires_at is not None and item.expires_at <= now):
        return None
    return item


def version_of(item: StoredItem | None) -> int:
    return 0 if item is None else item.version


def condition_error(
    key: bytes,
    current: StoredItem | None,
    *,
    if_version: int | None,
    if_absent: bool,
    index: int | None = None,
) -> VersionMismatch | None:
    """The VersionMismatch (carrying the key's current version) if the condition fails."""
    where = {} if index is None else {"index": index}
    current_version = version_of(current)
    if if_absent and current is not None:
        return VersionMismatch("the key exists", key=key, current_version=current_version, **where)
    if if_version is not None and if_version != current_version:
        return VersionMismatch(
            f"the key's version is {current_version}, not {if_version}",
            key=key,
            current_version=current_version,
            **where,
        )
    return None


def check_conditions_args(if_version: int | None, if_absent: bool) -> int | None:
    if not isinstance(if_absent, bool):
        raise InvalidArgument("if_absent must be a boolean")
    if if_version is None:
        return None
    if if_absent:
        raise InvalidArgument("if_absent and if_version cannot be combined")
    return as_version(if_version, "if_version")


def expiry(ttl: float | None, now: float) -> float | None:
    return None if ttl is None else now + ttl


def live_version(item: StoredItem | None, now: float) -> int | None:
    """The version a write at ``now`` replaces: None if the key is absent or expired."""
    if item is None or (item.expires_at is not None and item.expires_at <= now):
        return None
    return item.version


# ``prev_version`` of a mutation that replaces an earlier one of the same entry (record.py).
SAME_ENTRY = 0


def put_mutation(key: bytes, raw: bytes, expires_at: float | None, threshold: int,
                 prev_version: int | None = None) -> Mutation:
    encoded, compressed = encode_value(raw, threshold)
    return Mutation(MutationKind.PUT, key, encoded, compressed, expires_at, False, prev_version)


def next_counter(key: bytes, current: StoredItem | None, delta: object) -> int:
    """The counter's new value. A counter is stored as ASCII decimal; anything else is not a
    counter, and a result outside a signed 64-bit integer is refused (what other stores and
    every client language can represent)."""
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise InvalidArgument(f"delta must be an integer, got {delta!r}")
    base = 0
    if current is not None:
        text = decode_value(current.value, current.compressed)
        if not _is_decimal(text):
            raise InvalidArgument("the value is not an integer", key=key)
        base = int(text)
    result = base + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise InvalidArgument("the counter would leave the signed 64-bit range", key=key)
    return result


def _is_decimal(text: bytes) -> bool:
    if not text or len(text) > _MAX_COUNTER_TEXT:
        return False
    digits = text[1:] if text[:1] == b"-" else text
    return bool(digits) and digits.isdigit() and digits.isascii()


class CheckedOp(NamedTuple):
    """A batch op after validation: key and value normalized to bytes, conditions and ttl
    checked. Holding one is the proof that the op was validated, so the Store plans it as
    is: ``check_batch`` builds them from ``BatchOp``s, and the operation layer builds them
    straight from the wire (``parse_batch_ops``), so a request's ops are checked once.
    A NamedTuple because a batch builds one per op on the hot path (a frozen dataclass
    costs several times more to construct)."""

    op: str
    key: bytes
    value: bytes
    if_version: int | None
    if_absent: bool
    ttl: float | None


def check_batch(ops: Sequence[BatchOp], limits: Limits) -> list[CheckedOp]:
    """Validate a whole batch before anything is read or written."""
    if not ops:
        raise InvalidArgument("a batch needs at least one operation")
    if len(ops) > limits.max_batch_ops:
        raise TooLarge(f"{len(ops)} operations in one batch; the limit is {limits.max_batch_ops}")
    checked: list[CheckedOp] = []
    size = 0
    for index, op in enumerate(ops):
        if op.op not in ("put", "delete"):
            raise InvalidArgument(f"ops[{index}].op must be 'put' or 'delete', got {op.op!r}")
        key = as_key(op.key)
        if_version = check_conditions_args(op.if_version, op.if_absent)
        if op.op == "put":
            value = as_value(op.value, limits)
            ttl = as_ttl(op.ttl)
        else:
            if op.if_absent or op.ttl is not None or op.value:
                raise InvalidArgument(f"ops[{index}]: a delete takes only key and if_version")
            value, ttl = b"", None
        size += len(key) + len(value)
        checked.append(CheckedOp(op.op, key, value, if_version, op.if_absent, ttl))
    if size > limits.max_batch_bytes:
        raise TooLarge(f"{size} bytes in one batch; the limit is {limits.max_batch_bytes}")
    return checked


def is_blind(ops: Sequence[CheckedOp]) -> bool:
    """True when every op is a put without a condition: such a batch depends on no current
    state (it is an ``mput`` with per-op TTLs), so the Store plans it without reading."""
    for op in ops:
        if op.op != "put" or op.if_version is not None or op.if_absent:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Decision:
    """What a write decided under the Store's lock: the mutations to log (maybe none), the
    answer's payload (the part that is not the version), or a definite error. A stamped
    write logs its outcome in its session record either way (sessions.py)."""

    mutations: list[Mutation]
    payload: Any = None
    error: ShardKVError | None = None

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.payload, self.error)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    mutations: list[Mutation]
    # One result per op; a put's "version" is filled in once the LSN is known.
    results: list[dict[str, Any]]


def plan_batch(
    ops: Sequence[CheckedOp],
    before: dict[bytes, StoredItem | None],
    *,
    now: float,
    threshold: int,
    prevs: dict[bytes, int | None],
) -> BatchPlan:
    """Check every condition against the state before the batch (all of them, before any
    effect, as an etcd transaction compares), then derive the mutations in op order: a delete
    reports ``deleted`` if the key exists at that point of the batch, and a delete of a key
    that does not exist writes nothing. ``before`` holds every key of the batch, or may be
    empty when ``is_blind(ops)`` (nothing then looks at it). ``prevs`` is each key's live
    version before the batch (``live_version``); it is updated in place as ops apply, so
    each mutation records the version it replaces."""
    for index, op in enumerate(ops):
        if op.if_version is None and not op.if_absent:
            continue  # unconditional: nothing to compare (the common case, kept cheap)
        error = condition_error(
            op.key, before[op.key], if_version=op.if_version, if_absent=op.if_absent, index=index
        )
        if error is not None:
            raise error
    exists = {key: item is not None for key, item in before.items()}
    mutations: list[Mutation] = []
    results: list[dict[str, Any]] = []
    put = MutationKind.PUT
    for op in ops:
        key = op.key
        if op.op == "put":
            raw = op.value
            expires_at = None if op.ttl is None else now + op.ttl
            prev = prevs.get(key)
            if len(raw) < threshold:  # below the threshold encode_value keeps raw bytes
                mutations.append(Mutation(put, key, raw, False, expires_at, False, prev))
            else:
                mutations.append(put_mutation(key, raw, expires_at, threshold, prev))
            exists[key] = True
            prevs[key] = SAME_ENTRY
            results.append({"op": "put", "key": key})
        else:
            deleted = exists[key]
            if deleted:
                mutations.append(Mutation(MutationKind.DELETE, key, prev_version=prevs.get(key)))
                exists[key] = False
                prevs[key] = None
            results.append({"op": "delete", "key": key, "deleted": deleted})
    return BatchPlan(mutations, results)
