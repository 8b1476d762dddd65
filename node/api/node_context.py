"""What an operation needs from the node serving it (``NodeContext``), and the shapes of an
operation's arguments and handler. A module of its own because the transports (rpc, REST,
watch) and the operation modules all take it, and none of them should import the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shardkv.cluster.errors import Unavailable
from shardkv.cluster.limits import Limits

if TYPE_CHECKING:
    from shardkv.node.api.write_deadlines import WriteDeadlines
    from shardkv.node.storage.store import Store

Args = Mapping[str, Any]
Handler = Callable[["NodeContext", Args], Awaitable[Any]]

class WriteFence(Protocol):
    def enter(self, keys: Iterable[bytes], writes: bool) -> bool: ...
    def leave(self) -> None: ...
    async def lifted(self) -> bool: ...


@dataclass(slots=True)
class NodeContext:
    """What an operation needs from the node serving it.

    ``store`` is None while the node recovers or after it has stopped (requests then get
    ``UNAVAILABLE``, which a client retries). ``role`` is ``primary`` for a standalone node;
    the replication layer sets ``replica`` (writes then answer ``NOT_PRIMARY`` naming
    ``primary``) and ``ring_version`` once the node knows the cluster's ring.
    """

    limits: Limits = field(default_factory=Limits)
    store: Store | None = None
    role: str = "primary"
    node_id: str | None = None
    primary: dict[str, Any] | None = None
    ring_version: int | None = None
    # In a cluster: raises STALE_MAP for a key another shard owns (set by cluster_membership).
    owns_key: Callable[[bytes], None] | None = None
    # In a cluster: waits (bounded) until this node's ring reaches a version a client names
    # (set by cluster_membership; see ``ClusterMembership.catch_up_ring`` for why).
    ring_catch_up: Callable[[int], Awaitable[None]] | None = None
    # Set by replication (node/replication/shard_role.py): the role's read rules (a replica's
    # staleness bound, a primary's lease), and how long a write may wait for its concern.
    read_guard: Callable[[Args], None] | None = None
    write_timeout_s: float | None = None
    write_deadlines: WriteDeadlines | None = None  # made by the first write that needs it
    # Set by node/migration: refuses requests for fenced moving arcs, counts writes in flight.
    write_fence: WriteFence | None = None
    # Set by the server (node/replication/readiness.py): a replica's catch-up state, None on
    # other roles; /ready is 503 while it is not caught up.
    catch_up: Callable[[], dict[str, Any] | None] | None = None

    def serving_store(self) -> Store:
        store = self.store
        if store is None:
            raise Unavailable("the node is not serving (starting up or shutting down)")
        return store
