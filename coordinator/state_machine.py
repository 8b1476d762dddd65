"""The replicated state machine: committed commands in, new cluster maps out.

Every coordinator applies the same committed commands in the same order, so ``apply`` must
be a pure function of (state, command): no clocks, no randomness, no I/O. A command is a
plain dict (``{"op": "register_node", ...}``) that travels msgpack-encoded through Raft; a
command that is invalid *for the state it meets* is rejected here, deterministically on every
replica, and its result is an error value (``{"error": CODE, "message": ...}``), never an
exception that could leave replicas diverged.

The current map is swapped, never mutated: ``current`` always points at a complete map that
readers on other threads can serialize without locks (copy-on-write per change).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from shardkv.cluster.cluster_map import (
    DEFAULT_HASH,
    DEFAULT_VNODES,
    NODE_DOWN,
    NODE_DRAINING,
    NODE_STATUSES,
    NODE_UP,
    ROLE_NONE,
    ROLE_PRIMARY,
    ROLE_REPLICA,
    ClusterMap,
    CoordinatorInfo,
    NodeInfo,
    RingSpec,
    ShardInfo,
)
from shardkv.cluster.errors import ErrorCode
from shardkv.cluster.ring import HASH_FUNCTIONS
from shardkv.coordinator import placement
from shardkv.coordinator.migration_commands import MigrationCommands, refuse_while_migrating

MAX_SHARDS = 4096
MAX_REPLICATION_FACTOR = 7
MAX_VNODES = 4096
MAX_WEIGHT = 100
MAX_LABELS = 16
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Result = dict[str, Any]


class Rejected(Exception):
    """A command that cannot apply to the current state; becomes an error result."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def _invalid(message: str, **details: Any) -> Rejected:
    return Rejected(ErrorCode.INVALID_ARGUMENT, message, **details)


def _need_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise _invalid(f"{what} must be 1-64 characters of [A-Za-z0-9_.-], got {value!r}")
    return value


def _need_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _need_url(value: object, what: str = "url") -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value) or len(value) > 512:
        raise _invalid(f"{what} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _need_labels(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_LABELS:
        raise _invalid(f"labels must be an object of at most {MAX_LABELS} strings")
    labels = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > 64 or len(v) > 256:
            raise _invalid("labels must map short strings to strings")
        labels[k] = v
    return labels


class MapStateMachine:
    """The cluster map plus the little private state needed to keep ``apply`` deterministic
    (the next node number, registration tokens that make a retried register idempotent)."""

    def __init__(self) -> None:
        self.current = ClusterMap()
        self.next_node_number = 1
        self.tokens: dict[str, str] = {}  # registration token -> node id
        self.applied_commands = 0

    # -- snapshot (log compaction) -------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "map": self.current.to_dict(),
            "next_node_number": self.next_node_number,
            "tokens": dict(self.tokens),
            "applied_commands": self.applied_commands,
        }

    def restore(self, state: dict[str, Any]) -> None:
        restored = ClusterMap.from_dict(state["map"])
        restored.leader = None
        self.next_node_number = int(state.get("next_node_number", 1))
        self.tokens = {str(k): str(v) for k, v in dict(state.get("tokens") or {}).items()}
        self.applied_commands = int(state.get("applied_commands", 0))
        self.current = restored

    # -- apply ---------------------------------------------------------------------------

    def apply(self, command: object) -> Result:
        """Apply one committed command; returns ``{"ok": True, ...}`` or an error value."""
        self.applied_commands += 1
        if not isinstance(command, dict) or not isinstance(command.get("op"), str):
            return _error(_invalid("a command is an object with an 'op'"))
        handler = self._handlers().get(command["op"])
        if handler is None:
            return _error(Rejected(ErrorCode.UNKNOWN_OP, f"unknown map command {command['op']!r}"))
        draft = self.current.copy()
        try:
            result = handler(draft, command)
        except Rejected as exc:
            return _error(exc)
        except Exception as exc:  # a bug must not diverge replicas: same error everywhere
            return _error(Rejected(ErrorCode.INTERNAL, f"{command['op']} failed: {exc!r}"))
        if result.pop("_changed", True):
            draft.version = self.current.version + 1
            draft.leader = None
            self.current = draft
        result.setdefault("ok", True)
        result["map_version"] = self.current.version
        return result

    def _handlers(self) -> dict[str, Callable[[ClusterMap, dict[str, Any]], Result]]:
        return {
            "noop": lambda _m, _c: {"_changed": False},
            "register_coordinator": self._register_coordinator,
            "bootstrap": self._bootstrap,
            "register_node": self._register_node,
            "set_primary": self._set_primary,
            "add_shard": self._add_shard,
            "set_ring": self._set_ring,
            "set_node_status": self._set_node_status,
            "drain_node": self._drain_node,
            "add_member": self._add_member,
            "remove_node": self._remove_node,
            **MigrationCommands(self).handlers(),
        }

    # -- handlers (each mutates the draft map it is given) --------------------------------

    def _register_coordinator(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        cid = _need_id(c.get("id"), "coordinator id")
        info = CoordinatorInfo(url=_need_url(c.get("url")), raft=str(c.get("raft", "")))
        if m.coordinators.get(cid) == info:
            return {"_changed": False}
        m.coordinators[cid] = info
        return {}

    def _bootstrap(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        shards = _need_int(c.get("shards"), "shards", 1, MAX_SHARDS)
        rf = _need_int(c.get("replication_factor", 1), "replication_factor", 1,
                       MAX_REPLICATION_FACTOR)
        hash_name = c.get("hash", DEFAULT_HASH)
        if hash_name not in HASH_FUNCTIONS:
            raise _invalid(f"hash must be one of {sorted(HASH_FUNCTIONS)}, got {hash_name!r}")
        vnodes = _need_int(c.get("vnodes", DEFAULT_VNODES), "vnodes", 1, MAX_VNODES)
        if m.shards:
            if len(m.shards) == shards and m.replication_factor == rf:
                return {"_changed": False, "already": True}  # idempotent re-bootstrap
            raise Rejected(
                ErrorCode.VERSION_MISMATCH,
                f"the cluster is already bootstrapped with {len(m.shards)} shards "
                f"(replication factor {m.replication_factor})",
            )
        m.replication_factor = rf
        ids = [f"s{i}" for i in range(1, shards + 1)]
        m.shards = {sid: ShardInfo() for sid in ids}
        m.ring = RingSpec(version=1, hash=hash_name, vnodes=vnodes, shards=dict.fromkeys(ids, 1))
        self._fill_holes(m)
        return {"shards": ids}

    def _register_node(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        url = _need_url(c.get("url"))
        labels = _need_labels(c.get("labels"))
        token = c.get("token")
        if token is not None and (not isinstance(token, str) or not 8 <= len(token) <= 128):
            raise _invalid("token must be a string of 8 to 128 characters")
        wanted_shard = c.get("shard")
        if wanted_shard is not None:
            _need_id(wanted_shard, "shard")
            if wanted_shard not in m.shards:
                raise Rejected(ErrorCode.NOT_FOUND, f"no shard {wanted_shard!r}",
                               shards=sorted(m.shards))
        node_id = c.get("node_id")
        if node_id is None and token is not None:
            node_id = self.tokens.get(token)
        if node_id is None:
            node_id = f"n{self.next_node_number}"
            while node_id in m.nodes:
                self.next_node_number += 1
                node_id = f"n{self.next_node_number}"
            self.next_node_number += 1
        node_id = _need_id(node_id, "node id")
        claimed = [t for t, n in self.tokens.items() if n == node_id]
        if node_id in m.nodes and claimed and token not in claimed:
            # The id belongs to the node that first registered it (its token lives in its
            # data directory): nobody else re-points or re-registers it.
            raise Rejected(ErrorCode.FORBIDDEN,
                           f"node {node_id} is registered with another registration token; "
                           "remove it (DELETE /admin/nodes/{id}) before reusing its id",
                           node_id=node_id)
        node = m.nodes.get(node_id)
        if node is None:
            node = NodeInfo(url=url, labels=labels)
            m.nodes[node_id] = node
        else:
            node.url, node.labels = url, labels
            if node.status == NODE_DOWN:
                node.status = NODE_UP
        if node.shard is None and node.status == NODE_UP:
            target = wanted_shard or placement.choose_shard(m, node)
            if target is not None and len(m.shards[target].members) >= m.replication_factor:
                raise Rejected(
                    ErrorCode.FORBIDDEN,
                    f"shard {target} already has its {m.replication_factor} members; a node "
                    "joins a full shard only by an admin action (drain or remove one first)",
                    shard=target, members=list(m.shards[target].members))
            if target is not None:
                self._join(m, node_id, target)
        elif wanted_shard is not None and node.shard != wanted_shard:
            raise Rejected(
                ErrorCode.INVALID_ARGUMENT,
                f"node {node_id} already serves shard {node.shard}; drain it before moving it",
                node_id=node_id, shard=node.shard,
            )
        if token is not None:  # last: a refused registration records nothing
            self.tokens[token] = node_id
        shard = m.shards.get(node.shard) if node.shard else None
        return {"node_id": node_id, "shard": node.shard, "role": node.role,
                "epoch": shard.epoch if shard else 0}

    def _set_primary(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        shard_id = _need_id(c.get("shard"), "shard")
        node_id = _need_id(c.get("node"), "node")
        shard = m.shards.get(shard_id)
        if shard is None:
            raise Rejected(ErrorCode.NOT_FOUND, f"no shard {shard_id!r}")
        if node_id not in shard.members:
            raise _invalid(f"node {node_id} is not a member of shard {shard_id}",
                           members=shard.members)
        epoch = c.get("epoch")
        if epoch is None:
            epoch = shard.epoch + 1
        epoch = _need_int(epoch, "epoch", 0, 2**62)
        if epoch <= shard.epoch:
            raise Rejected(ErrorCode.STALE_EPOCH,
                           f"epoch {epoch} is not above shard {shard_id}'s epoch {shard.epoch}",
                           epoch=shard.epoch, primary=shard.primary)
        self._make_primary(m, shard_id, node_id, epoch)
        return {"shard": shard_id, "primary": node_id, "epoch": epoch}

    def _add_shard(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        if not m.shards:
            raise Rejected(ErrorCode.UNAVAILABLE, "bootstrap the cluster before adding shards")
        if len(m.shards) >= MAX_SHARDS:
            raise _invalid(f"at most {MAX_SHARDS} shards")
        shard_id = c.get("shard")
        if shard_id is None:
            n = len(m.shards) + 1
            while f"s{n}" in m.shards:
                n += 1
            shard_id = f"s{n}"
        shard_id = _need_id(shard_id, "shard")
        if shard_id in m.shards:
            raise Rejected(ErrorCode.VERSION_MISMATCH, f"shard {shard_id} already exists")
        weight = _need_int(c.get("weight", 1), "weight", 1, MAX_WEIGHT)
        in_ring = c.get("in_ring", True)
        if not isinstance(in_ring, bool):
            raise _invalid("in_ring must be a boolean")
        if in_ring:
            refuse_while_migrating(m, "adding a shard to the ring")
        m.shards[shard_id] = ShardInfo()
        if in_ring:
            m.ring.shards[shard_id] = weight
            m.ring.version += 1
        self._fill_holes(m)
        return {"shard": shard_id, "ring_version": m.ring.version}

    def _set_ring(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        expected = c.get("expected_version")
        if expected is not None and expected != m.ring.version:
            raise Rejected(ErrorCode.VERSION_MISMATCH,
                           f"ring version is {m.ring.version}, not {expected}",
                           current_version=m.ring.version)
        shards = c.get("shards")
        if not isinstance(shards, dict) or not shards:
            raise _invalid("shards must be a non-empty object {shard id: weight}")
        weights = {}
        for sid, weight in shards.items():
            if sid not in m.shards:
                raise Rejected(ErrorCode.NOT_FOUND, f"no shard {sid!r}")
            weights[sid] = _need_int(weight, f"weight of {sid}", 1, MAX_WEIGHT)
        if weights == m.ring.shards:
            return {"_changed": False, "ring_version": m.ring.version}
        refuse_while_migrating(m, "changing the ring")
        m.ring.shards = weights
        m.ring.version += 1
        return {"ring_version": m.ring.version}

    def _set_node_status(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        node_id = _need_id(c.get("node"), "node")
        status = c.get("status")
        if status not in NODE_STATUSES:
            raise _invalid(f"status must be one of {sorted(NODE_STATUSES)}")
        node = m.nodes.get(node_id)
        if node is None:
            raise Rejected(ErrorCode.NOT_FOUND, f"no node {node_id!r}")
        if node.status == status:
            return {"_changed": False}
        node.status = status
        if status == NODE_UP and node.shard is None:
            self._fill_holes(m)  # an undrained node is a spare again: it may fill a hole
        return {"node": node_id, "status": status, "shard": node.shard}

    def _add_member(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        """The admin's way to give a shard a member beyond its replication factor (a
        registration never does): a registered spare joins the shard as a replica."""
        shard_id = _need_id(c.get("shard"), "shard")
        node_id = _need_id(c.get("node"), "node")
        if shard_id not in m.shards:
            raise Rejected(ErrorCode.NOT_FOUND, f"no shard {shard_id!r}")
        node = m.nodes.get(node_id)
        if node is None:
            raise Rejected(ErrorCode.NOT_FOUND, f"no node {node_id!r}; it registers first")
        if node.shard == shard_id:
            return {"_changed": False, "shard": shard_id, "node": node_id,
                    "members": list(m.shards[shard_id].members)}
        if node.shard is not None:
            raise _invalid(f"node {node_id} serves shard {node.shard}; drain it first")
        if node.status != NODE_UP:
            raise _invalid(f"node {node_id} is {node.status}, not up")
        self._join(m, node_id, shard_id)
        return {"shard": shard_id, "node": node_id, "members": list(m.shards[shard_id].members)}

    def _drain_node(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        node_id = _need_id(c.get("node"), "node")
        if node_id not in m.nodes:
            raise Rejected(ErrorCode.NOT_FOUND, f"no node {node_id!r}")
        left = self._leave(m, node_id)
        m.nodes[node_id].status = NODE_DRAINING
        self._fill_holes(m)
        return {"node": node_id, "left_shard": left}

    def _remove_node(self, m: ClusterMap, c: dict[str, Any]) -> Result:
        node_id = _need_id(c.get("node"), "node")
        if node_id not in m.nodes:
            raise Rejected(ErrorCode.NOT_FOUND, f"no node {node_id!r}")
        left = self._leave(m, node_id)
        del m.nodes[node_id]
        self.tokens = {t: n for t, n in self.tokens.items() if n != node_id}
        self._fill_holes(m)
        return {"node": node_id, "left_shard": left}

    # -- membership mechanics ------------------------------------------------------------

    def _join(self, m: ClusterMap, node_id: str, shard_id: str) -> None:
        shard = m.shards[shard_id]
        node = m.nodes[node_id]
        shard.members.append(node_id)
        node.shard = shard_id
        if shard.primary is None:
            self._make_primary(m, shard_id, node_id, shard.epoch + 1)
        else:
            node.role = ROLE_REPLICA

    def _make_primary(self, m: ClusterMap, shard_id: str, node_id: str, epoch: int) -> None:
        shard = m.shards[shard_id]
        if shard.primary is not None and shard.primary in m.nodes:
            m.nodes[shard.primary].role = ROLE_REPLICA
        shard.primary = node_id
        shard.epoch = epoch
        m.nodes[node_id].role = ROLE_PRIMARY

    def _leave(self, m: ClusterMap, node_id: str) -> str | None:
        """Take a node out of its shard; a departing primary hands over to the first other
        member that is up (a new epoch), or leaves the shard without primary."""
        node = m.nodes[node_id]
        shard_id = node.shard
        if shard_id is None or shard_id not in m.shards:
            node.shard, node.role = None, ROLE_NONE
            return None
        shard = m.shards[shard_id]
        shard.members = [x for x in shard.members if x != node_id]
        node.shard, node.role = None, ROLE_NONE
        if shard.primary == node_id:
            successor = next(
                (x for x in shard.members if m.nodes.get(x) and m.nodes[x].status == NODE_UP),
                None,
            )
            shard.primary = None
            shard.epoch += 1
            if successor is not None:
                self._make_primary(m, shard_id, successor, shard.epoch)
        return shard_id

    def _fill_holes(self, m: ClusterMap) -> None:
        for node_id in placement.spares(m):
            target = placement.choose_shard(m, m.nodes[node_id])
            if target is None:
                return
            self._join(m, node_id, target)


def _error(exc: Rejected) -> Result:
    return {"error": exc.code.value, "message": exc.message, **exc.details}
