"""The record of an online migration, as the Raft map holds it (docs/resharding.md).

The map carries at most one running migration (``ClusterMap.migration``) and a short history
of finished ones (``ClusterMap.migrations``). Everything a new coordinator leader needs to
resume or abort is here: the target ring, the state, and the source epochs the fence saw.
Progress figures are written by the leader's driver through Raft about once a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COPYING = "copying"
CATCHING_UP = "catching_up"
FLIPPING = "flipping"
CLEANING = "cleaning"
DONE = "done"
ABORTED = "aborted"
FAILED = "failed"

RUNNING_STATES = frozenset({COPYING, CATCHING_UP, FLIPPING, CLEANING})
FINISHED_STATES = frozenset({DONE, ABORTED, FAILED})
BEFORE_FLIP = frozenset({COPYING, CATCHING_UP, FLIPPING})
MIGRATION_STATES = RUNNING_STATES | FINISHED_STATES

KIND_ADD = "add"
KIND_REMOVE = "remove"
KIND_WEIGHT = "weight"
KINDS = (KIND_ADD, KIND_REMOVE, KIND_WEIGHT)
HISTORY_LIMIT = 16


@dataclass(slots=True)
class MigrationRecord:
    """One migration. ``target_ring`` is the ring's shard -> weight after the flip;
    ``sources`` the shards that give keys, ``targets`` the ones that receive them (a key
    goes to its owner under ``target_ring``). ``target`` is the shard the operation is
    about (``shard`` in the API): the new shard of an add (then the only target), the
    shard drained by a remove (then the only source), the shard whose weight changes.
    ``leftovers``: after an abort of a remove or reweight, the target shards that may
    still hold partial copies of keys they do not own; the driver cleans them, and no
    migration starts until the list is empty. ``retired``: the members a remove took out of
    the map at ``done`` (a local cluster stops them).

    The flip also records what a watch needs to tell a user's write from a migration's
    copy or clean-up (docs/watch.md, "Resharding"): ``ring_before`` (shard -> weight before
    the flip), ``flip_ring_version`` (the ring version the flip made) and ``flip_lsns``
    (per source shard, the LSN its fence ended at: every write to a moved key is at or
    below it, the clean-up above; per target shard, an LSN at or above everything it
    imported: its own writes to a moved key come above it). ``floor_from``: per target
    whose log jumped to ``lsn_floor``, its last LSN before the jump (no version between the
    two exists: a watch resumes across the gap)."""

    id: str
    kind: str
    target: str
    sources: list[str]
    target_ring: dict[str, int]
    state: str = COPYING
    started_at: float = 0.0
    finished_at: float | None = None
    keys_moved: int = 0
    bytes_moved: int = 0
    keys_total: int | None = None
    rate_keys_s: float = 0.0
    error: str | None = None
    lsn_floor: int | None = None
    copy_started_at: float | None = None  # when the target's floor was raised (copy begins)
    flipped_at: float | None = None
    fenced_epochs: dict[str, int] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    ring_before: dict[str, int] = field(default_factory=dict)
    flip_ring_version: int | None = None
    flip_lsns: dict[str, int] = field(default_factory=dict)
    floor_from: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.targets:
            self.targets = [self.target]

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["shard"] = self.target
        return body

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MigrationRecord:
        return cls(
            id=str(raw["id"]),
            kind=str(raw.get("kind", KIND_ADD)),
            target=str(raw.get("target") or raw.get("shard")),
            sources=[str(s) for s in raw.get("sources") or []],
            target_ring={str(k): int(v) for k, v in dict(raw.get("target_ring") or {}).items()},
            state=str(raw.get("state", COPYING)),
            started_at=float(raw.get("started_at") or 0.0),
            finished_at=None if raw.get("finished_at") is None else float(raw["finished_at"]),
            keys_moved=int(raw.get("keys_moved") or 0),
            bytes_moved=int(raw.get("bytes_moved") or 0),
            keys_total=None if raw.get("keys_total") is None else int(raw["keys_total"]),
            rate_keys_s=float(raw.get("rate_keys_s") or 0.0),
            error=raw.get("error"),
            lsn_floor=None if raw.get("lsn_floor") is None else int(raw["lsn_floor"]),
            copy_started_at=_opt_float(raw.get("copy_started_at")),
            flipped_at=_opt_float(raw.get("flipped_at")),
            fenced_epochs={str(k): int(v)
                           for k, v in dict(raw.get("fenced_epochs") or {}).items()},
            targets=[str(s) for s in raw.get("targets") or []],
            leftovers=[str(s) for s in raw.get("leftovers") or []],
            retired=[str(s) for s in raw.get("retired") or []],
            ring_before=_int_map(raw.get("ring_before")),
            flip_ring_version=None if raw.get("flip_ring_version") is None
            else int(raw["flip_ring_version"]),
            flip_lsns=_int_map(raw.get("flip_lsns")),
            floor_from=_int_map(raw.get("floor_from")),
        )


def _int_map(value: object) -> dict[str, int]:
    return {str(k): int(v) for k, v in dict(value or {}).items()}  # type: ignore[call-overload]


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
