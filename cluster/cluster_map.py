"""The cluster map: which shards exist, who serves them, and how keys map onto them.

The coordinator group replicates this object through Raft; every other process (nodes,
clients, the dashboard) holds a read-only copy fetched from ``GET /v1/map``. The JSON shape is
the one of DESIGN.md (extra fields are allowed and ignored by older readers)::

    {"version": 12, "leader": "c1",
     "ring":   {"version": 3, "hash": "md5", "vnodes": 160, "shards": {"s1": {"weight": 1}}},
     "shards": {"s1": {"epoch": 4, "primary": "n1", "members": ["n1", "n2"], "state": "active"}},
     "nodes":  {"n1": {"url": "http://127.0.0.1:7101", "status": "up", "shard": "s1",
                       "role": "primary", "labels": {}}}}

``version`` rises at every change of anything in the map; ``ring.version`` rises only when the
key -> shard function changes (a node answers ``STALE_MAP`` against it). A map is a value:
readers never mutate it, the state machine builds a new one per change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from shardkv.cluster import wire
from shardkv.cluster.migration_record import MigrationRecord

DEFAULT_HASH = "md5"
DEFAULT_VNODES = 160

# Node status in the map: decisions, not liveness (liveness lives in the leader's memory).
NODE_UP = "up"
NODE_DOWN = "down"
NODE_DRAINING = "draining"
NODE_STATUSES = frozenset({NODE_UP, NODE_DOWN, NODE_DRAINING})

ROLE_PRIMARY = "primary"
ROLE_REPLICA = "replica"
ROLE_NONE = "none"  # registered but not (yet) placed, or drained

SHARD_ACTIVE = "active"
SHARD_MIGRATING = "migrating"  # receiving keys in a migration, not yet in the ring
SHARD_STATES = frozenset({SHARD_ACTIVE, SHARD_MIGRATING, "retiring"})


@dataclass(slots=True)
class RingSpec:
    """Everything needed to compute key -> shard identically everywhere."""

    version: int = 0
    hash: str = DEFAULT_HASH
    vnodes: int = DEFAULT_VNODES
    shards: dict[str, int] = field(default_factory=dict)  # shard id -> weight

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "hash": self.hash,
            "vnodes": self.vnodes,
            "shards": {sid: {"weight": w} for sid, w in sorted(self.shards.items())},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RingSpec:
        shards: dict[str, int] = {}
        for sid, conf in dict(raw.get("shards") or {}).items():
            weight = conf.get("weight", 1) if isinstance(conf, dict) else conf
            shards[str(sid)] = int(weight)
        return cls(
            version=int(raw.get("version", 0)),
            hash=str(raw.get("hash", DEFAULT_HASH)),
            vnodes=int(raw.get("vnodes", DEFAULT_VNODES)),
            shards=shards,
        )


@dataclass(slots=True)
class ShardInfo:
    """One replica set. ``epoch`` rises at every primary change (fencing token)."""

    epoch: int = 0
    primary: str | None = None
    members: list[str] = field(default_factory=list)
    state: str = SHARD_ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "primary": self.primary,
            "members": list(self.members),
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ShardInfo:
        return cls(
            epoch=int(raw.get("epoch", 0)),
            primary=raw.get("primary"),
            members=[str(m) for m in raw.get("members") or []],
            state=str(raw.get("state", SHARD_ACTIVE)),
        )


@dataclass(slots=True)
class NodeInfo:
    """One storage node as the map knows it: where it listens, what it serves."""

    url: str
    status: str = NODE_UP
    shard: str | None = None
    role: str = ROLE_NONE
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "shard": self.shard,
            "role": self.role,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NodeInfo:
        return cls(
            url=str(raw.get("url", "")),
            status=str(raw.get("status", NODE_UP)),
            shard=raw.get("shard"),
            role=str(raw.get("role", ROLE_NONE)),
            labels={str(k): str(v) for k, v in dict(raw.get("labels") or {}).items()},
        )


@dataclass(slots=True)
class CoordinatorInfo:
    """A member of the coordinator group: its HTTP URL (for redirects) and Raft address."""

    url: str
    raft: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "raft": self.raft}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CoordinatorInfo:
        return cls(url=str(raw.get("url", "")), raft=str(raw.get("raft", "")))


@dataclass(slots=True)
class ClusterMap:
    """The whole map. ``leader`` is filled in by the coordinator serving it (not replicated:
    it is the serving coordinator's view of who leads the group)."""

    version: int = 0
    leader: str | None = None
    replication_factor: int = 1
    ring: RingSpec = field(default_factory=RingSpec)
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    coordinators: dict[str, CoordinatorInfo] = field(default_factory=dict)
    # The running migration (docs/resharding.md) and the last few finished ones.
    migration: MigrationRecord | None = None
    migrations: list[MigrationRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "leader": self.leader,
            "replication_factor": self.replication_factor,
            "ring": self.ring.to_dict(),
            "shards": {sid: s.to_dict() for sid, s in sorted(self.shards.items())},
            "nodes": {nid: n.to_dict() for nid, n in sorted(self.nodes.items())},
            "coordinators": {cid: c.to_dict() for cid, c in sorted(self.coordinators.items())},
            "migration": None if self.migration is None else self.migration.to_dict(),
            "migrations": [m.to_dict() for m in self.migrations],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ClusterMap:
        if not isinstance(raw, dict):
            raise ValueError(f"a cluster map is an object, not {type(raw).__name__}")
        return cls(
            version=int(raw.get("version", 0)),
            leader=raw.get("leader"),
            replication_factor=int(raw.get("replication_factor", 1)),
            ring=RingSpec.from_dict(dict(raw.get("ring") or {})),
            shards={
                str(k): ShardInfo.from_dict(v) for k, v in dict(raw.get("shards") or {}).items()
            },
            nodes={str(k): NodeInfo.from_dict(v) for k, v in dict(raw.get("nodes") or {}).items()},
            coordinators={
                str(k): CoordinatorInfo.from_dict(v)
                for k, v in dict(raw.get("coordinators") or {}).items()
            },
            migration=None if not raw.get("migration")
            else MigrationRecord.from_dict(raw["migration"]),
            migrations=[MigrationRecord.from_dict(m) for m in raw.get("migrations") or []],
        )

    def copy(self) -> ClusterMap:
        return copy.deepcopy(self)

    # -- encodings -------------------------------------------------------------------------

    def to_json(self) -> bytes:
        return wire.to_json(self.to_dict())

    def to_msgpack(self) -> bytes:
        return wire.pack(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> ClusterMap:
        return cls.from_dict(wire.from_json(data))

    @classmethod
    def from_msgpack(cls, data: bytes) -> ClusterMap:
        return cls.from_dict(wire.unpack(data))

    # -- questions every reader asks -------------------------------------------------------

    def primary_of(self, shard_id: str) -> NodeInfo | None:
        shard = self.shards.get(shard_id)
        if shard is None or shard.primary is None:
            return None
        return self.nodes.get(shard.primary)

    def find_migration(self, migration_id: str) -> MigrationRecord | None:
        if self.migration is not None and self.migration.id == migration_id:
            return self.migration
        return next((m for m in self.migrations if m.id == migration_id), None)

    def node_url(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        return node.url if node else None

    def coordinator_url(self, coordinator_id: str | None) -> str | None:
        if coordinator_id is None:
            return None
        info = self.coordinators.get(coordinator_id)
        return info.url if info else None
