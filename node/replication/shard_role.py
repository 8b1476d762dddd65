"""Replication inside the node process: roles from the map, the commit gate, replica reads.

``NodeReplication`` plugs the replication machinery (``replication_primary.py``,
``replication_replica.py``, ``lease.py``) into a ``NodeServer``:

- **Roles.** Each placement from the coordinator link names this node's role and epoch. As
  primary it serves ``/v1/replicate``, installs the commit gate and starts its epoch with a
  no-op entry; as replica it follows the primary the map names. Becoming primary installs
  the gate *before* the first await, so no write slips through ungated; stepping down closes
  the primary side first, which fails pending writes with ``UNAVAILABLE`` (never reported
  acknowledged), then drops from the local log the entries no majority acknowledged (their
  fate is the new primary's to decide: the handshake brings back what it has).
- **Write concern.** ``majority`` entries pass ``commit_gate`` (a majority holds it, and the
  lease is held); ``one`` entries pass ``local_gate`` (the lease is held).
- **Lease.** Renewed from the coordinator link's answered heartbeats (``on_heartbeat``), only
  while this node is primary and its map is as new as the leader's.
- **Reads.** ``check_read`` runs before every read: on a replica, ``strong`` reads answer
  ``NOT_PRIMARY``, ``eventual`` ones ``TOO_STALE`` beyond ``max_staleness_ms`` or below
  ``min_version``; on a primary whose lease ran out, strong reads answer ``UNAVAILABLE`` (it
  may have been replaced).
- **Endpoints** (``replication_http.py``): the stream, ``/v1/replication`` (what the
  coordinator probes before a failover), ``/v1/digest``, fencing for planned switchovers.

A standalone node (no coordinator) is a one-member shard: no gate, no lease, no stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shardkv.cluster.cluster_map import ROLE_PRIMARY, ROLE_REPLICA, ClusterMap
from shardkv.cluster.control_messages import FenceAnswer, ReplicationStatus, UnfenceAnswer
from shardkv.cluster.errors import (
    NotPrimary,
    ShardKVError,
    StaleEpoch,
    TooStale,
    Unavailable,
)
from shardkv.cluster.structured_log import log_fields
from shardkv.node.replication.endpoints import ReplicationEndpoints
from shardkv.node.replication.lease import PrimaryLease
from shardkv.node.replication.majority_lease import (
    LeasePromise,
    MajorityLease,
    ShardLease,
    usable_grant_s,
)
from shardkv.node.replication.metrics import ReplicationCollector
from shardkv.node.replication.primary import ReplicationPrimary
from shardkv.node.replication.replica import ReplicationReplica
from shardkv.node.replication.replica_log import StoreReplicaTarget
from shardkv.node.testing import failpoints, negative_controls
from shardkv.node.wal.record import WalEntry

if TYPE_CHECKING:
    from shardkv.node.membership.coordinator_link import Placement
    from shardkv.node.server import NodeServer
    from shardkv.node.storage.store import Store

logger = logging.getLogger("shardkv.node.replication")

class NodeReplication:
    """See the module docstring. ``install()`` once, from ``NodeServer.__init__``."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server
        # The timing contract (cluster/timing.py) was validated with the node's config.
        timing = server.config.timing
        # Leases from the shard's majority, the coordinator's as the alternative source
        # (majority_lease.py); one promise per node, shared by its replica and primary sides.
        self.promise = LeasePromise(timing.lease_s)
        self.lease = ShardLease(
            PrimaryLease(timing.lease_s),
            MajorityLease(usable_grant_s(timing.lease_s, drift=timing.clock_drift,
                                         margin_s=timing.lease_margin_s), self.promise))
        self.primary: ReplicationPrimary | None = None
        self.replica: ReplicationReplica | None = None
        self.members: list[str] = []
        self.epoch = 0
        self.fenced = False
        self.failovers_seen = 0
        self._role_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def clustered(self) -> bool:
        return self.server.membership is not None

    def install(self) -> None:
        server = self.server
        server.app.add_routes(ReplicationEndpoints(self).routes())
        server.ctx.read_guard = self.check_read
        server.metrics.registry.register(ReplicationCollector(self))
        if self.clustered:
            server.ctx.write_timeout_s = server.config.timing.write_timeout_s
        server.on_stop.insert(0, self._stop)
        if self.clustered:
            server.on_ready.insert(0, self._keep_earlier_promise)
        if server.membership is not None:
            server.membership.listeners.append(self._on_placement)

    async def _keep_earlier_promise(self, server: NodeServer) -> None:
        """A node restarted with a log may have granted a lease just before it stopped; it
        keeps that promise for a whole grant (majority_lease.py)."""
        store = server.store
        if store is not None and store.wal.last_lsn > 0:
            self.promise.after_restart(store.epoch)

    # ------------------------------------------------------------------------------ roles

    def _store(self) -> Store:
        store = self.server.store
        if store is None:
            raise Unavailable("the node is not serving (starting up or shutting down)")
        return store

    async def _on_placement(self, placement: Placement, cluster_map: ClusterMap) -> None:
        async with self._role_lock:
            link = self.server.membership.link if self.server.membership else None
            if link is not None and link.on_heartbeat is None:
                link.on_heartbeat = self._heartbeat_answered
            shard = cluster_map.shards.get(placement.shard) if placement.shard else None
            self.members = list(shard.members) if shard else []
            if placement.role == ROLE_PRIMARY:
                await self._become_primary(placement.epoch)
            elif placement.role == ROLE_REPLICA and shard is not None:
                url = cluster_map.node_url(shard.primary) if shard.primary else None
                await self._become_replica(url, placement.epoch)
                if self.replica is not None:
                    self.replica.primary_id = shard.primary
            else:
                await self._step_down("no role in the map")
                await self._stop_following()
            self.epoch = max(self.epoch, placement.epoch)
            self.lease.majority.set_members(self.members)
            if self.primary is not None:
                self.primary.members_changed()

    async def _become_primary(self, epoch: int) -> None:
        if self.primary is not None and self.epoch == epoch:
            return
        store = self._store()
        if epoch > store.epoch:
            store.epoch = epoch
        # Gate first, before any await: from here on no write is acknowledged ungated.
        node_id = self.server.ctx.node_id or "node"
        self.lease.majority.begin(epoch, node_id, self.members)
        primary = ReplicationPrimary(
            store.wal, node_id=node_id, epoch=lambda: store.epoch,
            members=lambda: self.members, snapshot_source=store.snapshot_for_replica,
            on_newer_epoch=self._saw_newer_epoch, on_grant=self.lease.majority.granted,
            ring_version=lambda: self.server.ctx.ring_version)
        old, self.primary = self.primary, primary
        self.fenced = False
        store.set_commit_gate(self._majority_gate, local_gate=self._local_gate,
                              on_submit=primary.publish)
        store.watch_hub.follow_commit(None)  # what it applies has passed its commit gate
        if old is not None:
            await old.close("a new epoch began")
        await self._stop_following()
        self.epoch = epoch
        self.failovers_seen += 1
        await store.set_sweeper(True)
        logger.info("serving as primary", extra=log_fields(epoch=epoch, members=self.members,
                                                            lsn=store.last_lsn))
        self._spawn(self._start_epoch(store, epoch))

    async def _start_epoch(self, store: Store, epoch: int) -> None:
        """Renew the lease at once (rather than at the next heartbeat) and log the no-op
        that marks where this epoch begins."""
        link = self.server.membership.link if self.server.membership else None
        if link is not None:
            with contextlib.suppress(ShardKVError, OSError, asyncio.TimeoutError):
                await link.heartbeat_once()
        with contextlib.suppress(ShardKVError, ValueError):
            await store.begin_epoch(epoch)

    async def _become_replica(self, primary_url: str | None, epoch: int) -> None:
        was_primary = self.primary is not None
        await self._step_down("the map names another primary")
        store = self._store()
        # Watches served here send only what the primary says is committed; what this
        # node applied as primary was (its gate), what it holds from before is not known.
        store.watch_hub.follow_commit(store.applied_lsn if was_primary else 0)
        if epoch > store.epoch:
            store.epoch = epoch
        if self.replica is not None and self.replica.target.store is not store:  # type: ignore[attr-defined]
            await self._stop_following()
        if self.replica is None:
            self.replica = ReplicationReplica(
                StoreReplicaTarget(store), node_id=self.server.ctx.node_id or "node",
                primary_url=primary_url, epoch=epoch, promise=self.promise)
            self.replica.on_commit = store.watch_hub.commit
            self.replica.on_ring = store.watch_hub.saw_primary_ring
            self.replica.start()
        else:
            self.replica.retarget(primary_url, epoch)

    async def _step_down(self, reason: str) -> None:
        primary, self.primary = self.primary, None
        if primary is None:
            return
        self.lease.revoke()
        store = self._store()
        await store.set_sweeper(False)
        # A gate that refuses (not None: an entry between here and the close would then be
        # applied and acknowledged without a majority); closing fails the waiting ones.
        store.set_commit_gate(_refuse)
        await primary.close(reason)
        await store.barrier()
        if store.applied_lsn < store.wal.last_lsn:
            # Entries logged here that no majority acknowledged: their fate is the new
            # primary's to decide. Drop them; the handshake brings back what it has.
            await store.truncate_log_after(store.applied_lsn)
        store.set_commit_gate(None)
        logger.warning("stepped down as primary", extra=log_fields(
            reason=reason, lsn=store.last_lsn))

    async def _stop_following(self) -> None:
        replica, self.replica = self.replica, None
        if replica is not None:
            await replica.stop()

    def _saw_newer_epoch(self, epoch: int) -> None:
        """A replica knows a newer epoch: another primary exists. Stop acknowledging now."""
        logger.warning("a newer epoch exists; no longer acknowledging writes",
                       extra=log_fields(epoch=epoch, mine=self.epoch))
        self.lease.revoke()
        self.server.ctx.role = "deposed"
        self._spawn(self._refresh_map())

    async def _refresh_map(self) -> None:
        link = self.server.membership.link if self.server.membership else None
        if link is not None:
            with contextlib.suppress(ShardKVError, OSError):
                await link.refresh_map()

    def _heartbeat_answered(self, sent_at: float, answer: Mapping[str, Any]) -> None:
        link = self.server.membership.link if self.server.membership else None
        if self.primary is None or self.fenced or link is None:
            return
        if int(answer.get("map_version", 0)) > link.cluster_map.version:
            return  # the leader knows a newer map: it may have replaced us
        self.lease.renewed(sent_at)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stop(self, server: NodeServer) -> None:
        for task in list(self._background):
            task.cancel()
        await self._stop_following()
        primary, self.primary = self.primary, None
        if primary is not None:
            await primary.close("node stopping")

    # ----------------------------------------------------------------------- commit gates

    async def _majority_gate(self, entry: WalEntry) -> None:
        primary = self.primary
        if primary is None:
            raise Unavailable("not primary any more")
        # Awaited only when there is something to wait for: most entries of a batch find
        # the majority's acknowledgement already counted and the lease valid.
        if not primary.passed(entry):
            await primary.commit_gate(entry)
        # Fenced: the lease was given up; a majority commit is fenced by the replicas'
        # epochs on its own.
        if not self.fenced and (failpoints.ARMED or (self.clustered and not self.lease.valid)):
            await self._lease_gate()

    async def _local_gate(self, entry: WalEntry) -> None:
        primary = self.primary
        if primary is None:
            raise Unavailable("not primary any more")
        primary.local_durable(entry.lsn)
        await self._lease_gate()

    async def _lease_gate(self) -> None:
        if self.clustered:
            while not self.lease.valid:
                if self.primary is None:
                    raise Unavailable("not primary any more")
                await asyncio.sleep(0.01)
        if failpoints.ARMED:
            await failpoints.hit("primary_before_ack_client")

    # ------------------------------------------------------------------------------ reads

    def check_read(self, args: Mapping[str, Any]) -> None:
        """Whether this node may answer a read now.

        A staleness bound can only be vouched for by a node that knows where the primary is:
        a replica in step with its stream, or a primary whose lease is valid. A node that is
        joining, or a primary whose lease has run out (it may have been replaced while it was
        paused or cut off), answers a bounded eventual read with ``TOO_STALE`` so the client
        reads elsewhere, instead of serving its old state as fresh."""
        ctx = self.server.ctx
        eventual = args.get("consistency") == "eventual"
        bound = args.get("max_staleness_ms")
        if ctx.role == ROLE_PRIMARY:
            if self.clustered and self.primary is not None and not self.lease.valid:
                if not eventual:
                    raise Unavailable("this primary's lease has expired; it may have been "
                                      "replaced", lease_state=self.lease.state)
                if bound is not None:
                    raise TooStale("this primary's lease has expired; it may have been "
                                   "replaced, so it cannot vouch for max_staleness_ms",
                                   lease_state=self.lease.state)
            return
        if not eventual and not negative_controls.on("replica-strong-reads"):  # TEST ONLY
            raise NotPrimary(f"this node is a {ctx.role}; strong reads go to the primary",
                             primary=ctx.primary)
        if bound is not None and not negative_controls.on("skip-staleness-check"):  # TEST ONLY
            replica = self.replica if ctx.role == ROLE_REPLICA else None
            staleness = None if replica is None else replica.staleness_ms()
            if staleness is None or staleness > bound:
                raise TooStale(f"this {ctx.role} is {staleness} ms behind its primary, more "
                               f"than max_staleness_ms {bound}", staleness_ms=staleness)
        min_version = args.get("min_version")
        store = self.server.store
        if min_version is not None and store is not None and min_version > store.applied_lsn:
            raise TooStale(f"this node has applied up to {store.applied_lsn}, older than "
                           f"min_version {min_version}", applied_lsn=store.applied_lsn)

    # ---------------------------------------------------------------- state for endpoints

    def status(self) -> ReplicationStatus:
        """What ``GET /v1/replication`` answers (and the failover probe reads)."""
        store = self.server.store
        body: ReplicationStatus = {
            "node": self.server.ctx.node_id,
            "role": self.server.ctx.role,
            "epoch": store.epoch if store else self.epoch,
            "last_lsn": store.wal.last_lsn if store else 0,
            "last_epoch": store.wal.last_epoch if store else 0,
            "applied_lsn": store.applied_lsn if store else 0,
            "lease": self.lease.state,
            "lease_remaining_s": None if not self.lease.valid else round(
                min(self.lease.remaining_s, 1e9), 3),
            "fenced": self.fenced,
            "promise": self.promise.to_dict(),
        }
        if self.primary is not None:
            body["lease_detail"] = self.lease.to_dict()
        if self.primary is not None:
            body["commit_lsn"] = self.primary.majority_lsn
            body["replicas"] = self.primary.replicas()
            body["stream_reconnects"] = self.primary.reconnects
        if self.replica is not None:
            body["follower"] = self.replica.stats()
        return body

    def fence(self, epoch: int | None) -> FenceAnswer:
        """Planned switchover, step 1: take no new writes (in-flight ones still commit) and
        report the last LSN; the coordinator waits until the target holds it."""
        store = self._store()
        if self.primary is None:
            raise NotPrimary("only the primary can be fenced", primary=self.server.ctx.primary)
        if epoch is not None and epoch != store.epoch:
            raise StaleEpoch(f"fence for epoch {epoch}, this primary is in {store.epoch}",
                             epoch=store.epoch)
        self.fenced = True
        self.server.ctx.role = "fenced"  # new writes: NOT_PRIMARY, clients retry elsewhere
        # Give the lease up and let the replicas drop their promise, so the target need not
        # wait a whole grant (majority_lease.py); in-flight writes still commit by majority.
        self.lease.revoke()
        self.primary.release_leases()
        return {"last_lsn": store.last_lsn, "epoch": store.epoch}

    def unfence(self) -> UnfenceAnswer:
        """The switchover was abandoned: take writes again."""
        if self.primary is not None and self.fenced:
            self.fenced = False
            self.primary.release_leases(False)
            self.lease.majority.begin(self.epoch, self.server.ctx.node_id or "node",
                                      self.members)
            self.server.ctx.role = ROLE_PRIMARY
        return {"fenced": self.fenced}


async def _refuse(entry: WalEntry) -> None:
    raise Unavailable("this node stopped being the primary before the write committed")
