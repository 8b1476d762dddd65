"""The version of the node <-> coordinator protocol (registration, heartbeats, handoff), and
the rule for processes of different releases.

A rolling restart (``shardkv restart --rolling``, ``helm upgrade``) upgrades the nodes before
the coordinators, or both at once, one process at a time: for minutes, nodes of release N talk
to coordinators of release N-1 and the other way round. The rule is the replication stream's
(``cluster/replication_hello.py``): versions N and N-1 interoperate, anything further apart is
refused with ``UNSUPPORTED_PROTOCOL`` naming both versions, so an upgrade must not skip a
release while the cluster has processes on both sides of it.

Why a header and not a body field: the coordinators of version 1 refuse any body field they do
not know (``only_fields``), so a versioned body would lock every upgraded node out of every
not-yet-upgraded coordinator. A header is ignored by them, and its absence is how a version-1
node is recognised (``UNVERSIONED``). Both sides check:

- the node sends ``X-Shardkv-Protocol: N`` on every call to a coordinator; the coordinator
  refuses a registration, heartbeat or handoff whose version is out of its window
  (``require_compatible``);
- the coordinator answers with its own version in the same header, and the node refuses a
  coordinator out of its window (a version-1 coordinator sends none: it is version 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shardkv.cluster.errors import InvalidArgument, UnsupportedProtocol

CONTROL_PROTOCOL_VERSION: Final = 2
UNVERSIONED: Final = 1  # the releases before the header existed
PROTOCOL_HEADER: Final = "X-Shardkv-Protocol"
MAX_HEADER_CHARS: Final = 9


def version_in(headers: Mapping[str, str]) -> int:
    """The protocol version named in ``headers`` (``UNVERSIONED`` when the header is absent);
    ``InvalidArgument`` for a header that is not a positive integer."""
    raw = headers.get(PROTOCOL_HEADER)
    if raw is None:
        return UNVERSIONED
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > MAX_HEADER_CHARS or int(raw) < 1:
        raise InvalidArgument(f"{PROTOCOL_HEADER} must be a positive integer, "
                              f"got {raw[:20]!r}")
    return int(raw)


def supported_versions(ours: int = CONTROL_PROTOCOL_VERSION) -> list[int]:
    """The versions a process of version ``ours`` accepts: N and N-1."""
    return [v for v in (ours - 1, ours) if v >= 1]


def require_compatible(theirs: int, *, peer: str, ours: int = CONTROL_PROTOCOL_VERSION) -> None:
    """Nothing when ``theirs`` is within one version of ``ours``; otherwise
    ``UnsupportedProtocol`` naming both versions and which side must move."""
    if abs(ours - theirs) <= 1:
        return
    side = "newer" if theirs > ours else "older"
    older = "this process" if theirs > ours else peer
    raise UnsupportedProtocol(
        f"{peer} speaks node-coordinator protocol version {theirs}, {side} than this "
        f"process's version {ours} by more than one; versions {ours - 1} and {ours} are "
        f"accepted here: upgrade {older} one release at a time",
        protocol_version=ours, peer_protocol_version=theirs,
        supported=supported_versions(ours))


def version_headers(ours: int = CONTROL_PROTOCOL_VERSION) -> dict[str, str]:
    """The header that names this process's version (on a request or an answer)."""
    return {PROTOCOL_HEADER: str(ours)}
