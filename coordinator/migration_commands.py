"""The Raft commands of an online migration (docs/resharding.md), applied by the map state
machine: pure functions of (map, command), like every other command. Timestamps come in the
command (``now``), written by the proposer, so every coordinator records the same ones.

- ``begin_migration`` ``{id, kind: "add", shard?, weight?, now}``: records the migration and
  creates the target shard outside the ring (spares and ``--shard`` nodes may join it).
  ``{id, kind: "remove", shard, now}``: drain ``shard`` into every other shard of the ring.
  ``{id, kind: "weight", shard, weight, now}``: move the share of ``shard`` (a higher weight
  takes keys from every other shard, a lower one gives keys to them).
- ``migration_progress`` ``{id, keys_moved, bytes_moved, keys_total?, rate_keys_s, lsn_floor?,
  floor_from?}``
- ``migration_state`` ``{id, state, error?, now}``: copying -> catching_up -> flipping, and
  back to copying when a fence must be redone; cleaning -> done.
- ``flip_migration`` ``{id, epochs: {shard: epoch}, lsns?: {shard: lsn}}``: the ring becomes
  the target ring, but only if every source shard still has the epoch the fence was taken
  in; the record keeps the ring before, the new ring version and ``lsns`` (for watches).
- ``abort_migration`` ``{id, state: "aborted"|"failed", error?, now}``: before the flip only.
  A remove or reweight leaves its targets in ``leftovers`` (they may hold partial copies).
- ``leftovers_cleaned`` ``{id, shard}``: a target of an aborted migration holds no key it
  does not own any more.

At ``done``, a remove retires its shard: it leaves the map, and its members are marked
``draining`` (never silently reused; ``shardkv up`` clusters stop them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shardkv.cluster.cluster_map import (
    NODE_DRAINING,
    ROLE_NONE,
    SHARD_ACTIVE,
    SHARD_MIGRATING,
    ClusterMap,
    ShardInfo,
)
from shardkv.cluster.errors import ErrorCode
from shardkv.cluster.migration_record import (
    ABORTED,
    BEFORE_FLIP,
    CATCHING_UP,
    CLEANING,
    COPYING,
    DONE,
    FAILED,
    FLIPPING,
    HISTORY_LIMIT,
    KIND_ADD,
    KIND_REMOVE,
    KIND_WEIGHT,
    KINDS,
    MigrationRecord,
)

if TYPE_CHECKING:
    from shardkv.coordinator.state_machine import MapStateMachine, Result

# state -> the states a ``migration_state`` command may move it to
_TRANSITIONS: dict[str, frozenset[str]] = {
    COPYING: frozenset({CATCHING_UP, FLIPPING}),
    CATCHING_UP: frozenset({COPYING, FLIPPING}),
    FLIPPING: frozenset({COPYING}),
    CLEANING: frozenset({DONE}),
}


def _sm():  # late import: state_machine imports this module
    from shardkv.coordinator import state_machine
    return state_machine


def _rejected(code: ErrorCode, message: str, **details: Any) -> Exception:
    return _sm().Rejected(code, message, **details)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _rejected(ErrorCode.INVALID_ARGUMENT, f"{what} must be a non-negative number")
    return float(value)


def running_or_none(m: ClusterMap, migration_id: object) -> MigrationRecord:
    """The running migration named ``migration_id``; NOT_FOUND or VERSION_MISMATCH if it is
    unknown or already finished."""
    sm = _sm()
    mid = sm._need_id(migration_id, "migration id")
    running = m.migration
    if running is not None and running.id == mid:
        return running
    finished = m.find_migration(mid)
    if finished is not None:
        raise _rejected(ErrorCode.VERSION_MISMATCH,
                        f"migration {mid} is already {finished.state}", state=finished.state)
    raise _rejected(ErrorCode.NOT_FOUND, f"no migration {mid!r}")


def refuse_while_migrating(m: ClusterMap, what: str) -> None:
    if m.migration is not None:
        raise _rejected(ErrorCode.VERSION_MISMATCH,
                        f"{what} refused: migration {m.migration.id} is {m.migration.state}; "
                        f"wait for it or abort it", migration=m.migration.id)


def _park_members(m: ClusterMap, shard: ShardInfo | None) -> None:
    for node_id in shard.members if shard else []:
        node = m.nodes.get(node_id)
        if node is not None:
            # Never reused silently: these nodes hold (partial) copies of moved arcs.
            node.shard, node.role, node.status = None, ROLE_NONE, NODE_DRAINING


def _refuse_while_leftovers(m: ClusterMap) -> None:
    for record in m.migrations:
        if record.leftovers:
            raise _rejected(ErrorCode.VERSION_MISMATCH,
                            f"migration {record.id} was {record.state}; shards "
                            f"{', '.join(record.leftovers)} are still deleting the keys it "
                            f"had copied to them; retry shortly", migration=record.id)


def _finish(m: ClusterMap, record: MigrationRecord, state: str, now: float) -> None:
    record.state = state
    record.finished_at = now
    m.migrations = [*m.migrations, record][-HISTORY_LIMIT:]
    m.migration = None


class MigrationCommands:
    """Bound to one state machine (for its id checks, placement and membership mechanics)."""

    def __init__(self, machine: MapStateMachine) -> None:
        self.machine = machine

    def handlers(self) -> dict[str, Callable[[ClusterMap, dict[str, Any]], Result]]:
        return {
            "begin_migration": self.begin,
            "migration_progress": self.progress,
            "migration_state": self.set_state,
            "flip_migration": self.flip,
            "abort_migration": self.abort,
            "leftovers_cleaned": self.leftovers_cleaned,
        }

    def begin(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        sm = _sm()
        mid = sm._need_id(c.get("id"), "migration id")
        now = _number(c.get("now", 0), "now")
        kind = c.get("kind", KIND_ADD)
        if kind not in KINDS:
            raise sm._invalid(f"unknown migration kind {kind!r}; known: {', '.join(KINDS)}")
        if not m.shards:
            raise _rejected(ErrorCode.UNAVAILABLE, "bootstrap the cluster before adding shards")
        weight = 0
        if kind != KIND_REMOVE or c.get("weight") is not None:
            weight = sm._need_int(c.get("weight", 1 if kind == KIND_ADD else None), "weight", 1,
                                  sm.MAX_WEIGHT)
        if c.get("shard") is not None or kind != KIND_ADD:
            sm._need_id(c.get("shard"), "shard")
        refuse_while_migrating(m, "starting a migration")
        _refuse_while_leftovers(m)
        if m.find_migration(mid) is not None:
            raise _rejected(ErrorCode.VERSION_MISMATCH, f"migration id {mid} was used already")
        if kind != KIND_ADD:
            return self._begin_move(m, mid, kind, str(c["shard"]),
                                    weight if kind == KIND_WEIGHT else 0, now)
        if len(m.shards) >= sm.MAX_SHARDS:
            raise sm._invalid(f"at most {sm.MAX_SHARDS} shards")
        shard_id = c.get("shard")
        if shard_id is None:
            n = len(m.shards) + 1
            while f"s{n}" in m.shards:
                n += 1
            shard_id = f"s{n}"
        shard_id = sm._need_id(shard_id, "shard")
        if shard_id in m.shards:
            raise _rejected(ErrorCode.VERSION_MISMATCH, f"shard {shard_id} already exists",
                            shard=shard_id)
        sources = sorted(m.ring.shards)
        m.shards[shard_id] = ShardInfo(state=SHARD_MIGRATING)
        m.migration = MigrationRecord(
            id=mid, kind=KIND_ADD, target=shard_id, sources=sources,
            target_ring={**m.ring.shards, shard_id: weight}, state=COPYING, started_at=now,
        )
        self.machine._fill_holes(m)
        return {"migration": mid, "shard": shard_id}

    def _begin_move(self, m: ClusterMap, mid: str, kind: str, shard_id: str, weight: int,
                    now: float) -> Result:
        """A remove (weight 0) or a reweight of a shard in the ring. Only arcs of
        ``shard_id`` change owner: the ring gives each shard ``vnodes x weight`` points
        named after it (cluster/ring.py), so the other shards' points stay where they are."""
        ring = m.ring.shards
        if shard_id not in m.shards:
            raise _rejected(ErrorCode.NOT_FOUND, f"no shard {shard_id!r}", shard=shard_id)
        if shard_id not in ring:
            raise _rejected(ErrorCode.VERSION_MISMATCH,
                            f"shard {shard_id} is not in the ring", shard=shard_id)
        others = sorted(s for s in ring if s != shard_id)
        if kind == KIND_REMOVE:
            if not others:
                raise _rejected(ErrorCode.INVALID_ARGUMENT,
                                f"shard {shard_id} is the last shard; its keys have nowhere "
                                f"to go", shard=shard_id)
            target_ring = {s: ring[s] for s in others}
            sources, targets = [shard_id], others
        else:
            if weight == ring[shard_id]:
                raise _rejected(ErrorCode.INVALID_ARGUMENT,
                                f"shard {shard_id} already has weight {weight}",
                                shard=shard_id)
            if not others:
                raise _rejected(ErrorCode.INVALID_ARGUMENT,
                                f"shard {shard_id} is the only shard; a weight moves nothing",
                                shard=shard_id)
            target_ring = {**ring, shard_id: weight}
            if weight > ring[shard_id]:
                sources, targets = others, [shard_id]
            else:
                sources, targets = [shard_id], others
        m.migration = MigrationRecord(
            id=mid, kind=kind, target=shard_id, sources=sources, targets=targets,
            target_ring=target_ring, state=COPYING, started_at=now,
        )
        return {"migration": mid, "shard": shard_id}

    def progress(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        record = running_or_none(m, c.get("id"))
        record.keys_moved = int(_number(c.get("keys_moved", record.keys_moved), "keys_moved"))
        record.bytes_moved = int(_number(c.get("bytes_moved", record.bytes_moved),
                                         "bytes_moved"))
        if c.get("keys_total") is not None:
            record.keys_total = int(_number(c["keys_total"], "keys_total"))
        record.rate_keys_s = _number(c.get("rate_keys_s", record.rate_keys_s), "rate_keys_s")
        if c.get("lsn_floor") is not None:
            record.lsn_floor = int(_number(c["lsn_floor"], "lsn_floor"))
            record.copy_started_at = _number(c.get("now", 0), "now")
        floor_from = c.get("floor_from")
        if isinstance(floor_from, dict):
            record.floor_from = {str(k): int(v) for k, v in floor_from.items()
                                 if isinstance(v, int) and not isinstance(v, bool)}
        return {"migration": record.id}

    def set_state(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        record = running_or_none(m, c.get("id"))
        state = c.get("state")
        if state == record.state:
            return {"_changed": False, "state": state}
        if state not in _TRANSITIONS.get(record.state, frozenset()):
            raise _rejected(ErrorCode.VERSION_MISMATCH,
                            f"migration {record.id} cannot go from {record.state} to {state!r}",
                            state=record.state)
        if state == DONE:
            if record.kind == KIND_REMOVE:
                # Drained and cleaned: the shard leaves the map.
                retired = m.shards.pop(record.target, None)
                record.retired = list(retired.members) if retired else []
                _park_members(m, retired)
            _finish(m, record, DONE, _number(c.get("now", 0), "now"))
            return {"migration": record.id, "state": DONE}
        record.state = state
        if state == COPYING:
            record.fenced_epochs = {}
        return {"migration": record.id, "state": state}

    def flip(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        record = running_or_none(m, c.get("id"))
        if record.state != FLIPPING:
            raise _rejected(ErrorCode.VERSION_MISMATCH,
                            f"migration {record.id} is {record.state}, not flipping",
                            state=record.state)
        epochs = c.get("epochs")
        if not isinstance(epochs, dict) or set(epochs) != set(record.sources):
            raise _rejected(ErrorCode.INVALID_ARGUMENT,
                            "epochs must name the epoch of every source shard")
        for sid, epoch in sorted(epochs.items()):
            shard = m.shards.get(sid)
            if shard is None or shard.epoch != epoch:
                raise _rejected(ErrorCode.STALE_EPOCH,
                                f"source shard {sid} changed primary since its fence; fence "
                                f"again", shard=sid)
        for sid in record.targets:
            if sid not in m.shards:
                raise _rejected(ErrorCode.NOT_FOUND, f"target shard {sid} is gone")
        lsns = c.get("lsns") or {}
        if not isinstance(lsns, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in lsns.values()):
            raise _rejected(ErrorCode.INVALID_ARGUMENT,
                            "lsns must map shards to non-negative integers")
        record.ring_before = dict(m.ring.shards)
        record.flip_lsns = {str(k): int(v) for k, v in lsns.items()}
        m.ring.shards = dict(record.target_ring)
        m.ring.version += 1
        record.flip_ring_version = m.ring.version
        if record.kind == KIND_ADD:
            m.shards[record.target].state = SHARD_ACTIVE
        record.fenced_epochs = {str(k): int(v) for k, v in epochs.items()}
        record.flipped_at = _number(c.get("now", 0), "now")
        record.state = CLEANING
        return {"migration": record.id, "ring_version": m.ring.version}

    def abort(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        record = running_or_none(m, c.get("id"))
        state = c.get("state", ABORTED)
        if state not in (ABORTED, FAILED):
            raise _sm()._invalid("an abort ends in 'aborted' or 'failed'")
        if record.state not in BEFORE_FLIP:
            raise _rejected(ErrorCode.VERSION_MISMATCH,
                            f"migration {record.id} is {record.state}: the ring has flipped, "
                            f"it can only finish", state=record.state)
        error = c.get("error")
        record.error = None if error is None else str(error)[:500]
        if record.kind == KIND_ADD:
            _park_members(m, m.shards.pop(record.target, None))
        else:
            # Existing shards received part of the arcs: they delete what they do not own
            # before any other migration may start (the driver does it).
            record.leftovers = list(record.targets)
        _finish(m, record, state, _number(c.get("now", 0), "now"))
        return {"migration": record.id, "state": state}

    def leftovers_cleaned(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        sm = _sm()
        mid = sm._need_id(c.get("id"), "migration id")
        shard = sm._need_id(c.get("shard"), "shard")
        record = next((r for r in m.migrations if r.id == mid), None)
        if record is None:
            raise _rejected(ErrorCode.NOT_FOUND, f"no finished migration {mid!r}")
        if shard not in record.leftovers:
            return {"_changed": False, "leftovers": list(record.leftovers)}
        record.leftovers = [s for s in record.leftovers if s != shard]
        return {"migration": mid, "leftovers": list(record.leftovers)}
