"""The bodies of the control calls between processes, typed once for both sides.

- the coordinator probes a node's ``REPLICATION_STATUS`` before a failover and reads its log's
  end (``last_lsn``, and ``last_epoch``, the epoch of the last entry) with
  ``position_from_status``;
- a planned switchover ``FENCE``\\s the old primary (``FenceRequest`` -> ``FenceAnswer``) and,
  if it is abandoned, ``UNFENCE``\\s it (-> ``UnfenceAnswer``);
- a node registers (``RegisterRequest``) and heartbeats (``HeartbeatRequest``) with the
  coordinator; the coordinator refuses fields outside ``REGISTER_FIELDS`` and
  ``HEARTBEAT_FIELDS``.

These are ``TypedDict``\\s because they travel as msgpack or JSON maps: the type checker holds
both sides to the same keys, and the wire form stays a plain map.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class FenceRequest(TypedDict, total=False):
    epoch: int | None  # the epoch the coordinator believes the primary is in


class FenceAnswer(TypedDict):
    last_lsn: int  # the target must hold this before it is promoted
    epoch: int


class UnfenceAnswer(TypedDict):
    fenced: bool


class ReplicationStatus(TypedDict):
    """What ``GET /v1/replication`` answers."""

    node: str | None
    role: str | None
    epoch: int
    last_lsn: int
    last_epoch: int
    applied_lsn: int
    lease: str
    lease_remaining_s: float | None
    fenced: bool
    promise: NotRequired[dict[str, float | int]]  # the lease this node granted (epoch, left)
    lease_detail: NotRequired[dict[str, object]]  # primary only: source, grantors
    commit_lsn: NotRequired[int]  # primary only
    replicas: NotRequired[list[dict[str, Any]]]  # primary only
    stream_reconnects: NotRequired[int]  # primary only
    follower: NotRequired[dict[str, Any]]  # replica only


def position_from_status(body: object, node_id: str) -> tuple[int, int] | None:
    """(``last_epoch``, ``last_lsn``) from a status answer of ``node_id``; None when the body
    is not one (or another node answered at that URL)."""
    if not isinstance(body, dict) or body.get("node") not in (None, node_id):
        return None
    try:
        return int(body["last_epoch"]), int(body["last_lsn"])
    except (KeyError, TypeError, ValueError):
        return None


class RegisterRequest(TypedDict, total=False):
    url: str
    labels: dict[str, str]
    token: str
    node_id: str
    shard: str


class HeartbeatRequest(TypedDict, total=False):
    lsn: int
    epoch: int
    role: str
    map_version: int
    ring_version: int


REGISTER_FIELDS = frozenset(RegisterRequest.__annotations__)
HEARTBEAT_FIELDS = frozenset(HeartbeatRequest.__annotations__)
