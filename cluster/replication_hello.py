"""The replication stream's opening message, and the rule for nodes of different versions.

During a rolling upgrade (``helm upgrade`` replaces pods one at a time) a primary and its
replicas run different releases. Each release speaks one version of the replication protocol,
``PROTOCOL_VERSION``, and also the one before it. The rule (``docs/protocol.md``):

- the replica names its version in ``hello``; the primary answers ``welcome`` with the version
  the session will speak, the lower of the two, if they differ by at most one;
- a version more than one apart, either way, is refused with ``INVALID_ARGUMENT`` naming both
  versions, and the stream closes (the replica retries, and attaches once one side is
  upgraded);
- a hello or welcome without a version is version 1 (the releases before the field existed).

So versions N and N-1 interoperate, and an upgrade must not skip a version while a shard has
members on both sides of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from shardkv.cluster import wire
from shardkv.cluster.errors import InvalidArgument

HELLO: Final = "hello"
PROTOCOL_VERSION: Final = 2
UNVERSIONED: Final = 1  # what a message without a ``version`` field speaks


def need_int(message: dict[str, Any], name: str) -> int:
    """A non-negative integer field of a stream message, or ``InvalidArgument``."""
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{message.get('t')}.{name} must be a non-negative integer, "
                              f"got {value!r}")
    return value


def version_of(message: dict[str, Any]) -> int:
    """The protocol version a hello or welcome carries (``UNVERSIONED`` when absent)."""
    if "version" not in message:
        return UNVERSIONED
    version = need_int(message, "version")
    if version < 1:
        raise InvalidArgument(f"{message.get('t')}.version must be >= 1, got {version}")
    return version


def negotiate(ours: int, theirs: int, *, peer: str = "the peer") -> int:
    """The version a session speaks: the lower one, if the two are at most one apart."""
    if abs(ours - theirs) > 1:
        newer = "newer" if theirs > ours else "older"
        raise InvalidArgument(
            f"{peer} speaks replication protocol version {theirs}, {newer} than this node's "
            f"{ours} by more than one; versions N and N-1 interoperate, so upgrade one "
            f"version at a time", protocol_version=ours, peer_protocol_version=theirs)
    return min(ours, theirs)


@dataclass(frozen=True, slots=True)
class Hello:
    """Replica -> primary: who I am, the epoch I believe in, my log's last entry (LSN and the
    epoch it was written in), and the protocol version I speak."""

    node: str
    epoch: int
    last_lsn: int
    last_epoch: int
    want_snapshot: bool = False
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        return wire.pack({"t": HELLO, "node": self.node, "epoch": self.epoch,
                          "last_lsn": self.last_lsn, "last_epoch": self.last_epoch,
                          "want_snapshot": self.want_snapshot, "version": self.version})

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Hello:
        node = message.get("node")
        if not isinstance(node, str) or not node or len(node) > 128:
            raise InvalidArgument("hello.node must be a node id")
        return cls(node, need_int(message, "epoch"), need_int(message, "last_lsn"),
                   need_int(message, "last_epoch"), bool(message.get("want_snapshot")),
                   version_of(message))
