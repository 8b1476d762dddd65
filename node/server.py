"""The storage node process: builds the app, opens the store, serves, and stops cleanly.

Order matters at both ends. At start the node binds its port *before* recovering the store,
so ``/health`` answers and ``/ready`` says 503 while a long WAL replay runs (an orchestrator
then waits instead of killing a node that is merely recovering). On SIGTERM/SIGINT it reverses:
``/ready`` turns 503, the listening socket closes, rpc connections stop taking new requests
and finish those in flight (bounded by ``shutdown_grace_s``), HTTP handlers finish, and only
then is the store flushed and closed. The exit status is 0 after a graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from shardkv.cluster import event_loop, rpc_batches
from shardkv.cluster.limits import MAX_FRAME_BYTES, Limits
from shardkv.cluster.structured_log import log_fields, setup_logging
from shardkv.node import gc_thresholds
from shardkv.node.api.events_feed import EventsFeed
from shardkv.node.api.front_door import FrontDoor
from shardkv.node.api.lean_lane import LeanLane
from shardkv.node.api.limits import ConnectionGate, LimitedSite
from shardkv.node.api.node_context import NodeContext
from shardkv.node.api.rest import RestApi
from shardkv.node.api.rpc import FRAME_READ_LIMIT, RpcConnection
from shardkv.node.backup import BackupExport, BackupImport, WalArchiver
from shardkv.node.config import NodeConfig
from shardkv.node.disk_admin import DiskAdmin
from shardkv.node.membership.cluster_membership import ClusterMembership
from shardkv.node.membership.internal_guard import InternalGuard
from shardkv.node.metrics import NodeMetrics
from shardkv.node.migration import MigrationService
from shardkv.node.replication.handoff import PrimaryHandoff
from shardkv.node.replication.readiness import catch_up_state
from shardkv.node.replication.shard_role import NodeReplication
from shardkv.node.stop_budget import StopBudget, cancel_leftovers
from shardkv.node.storage.disk_report import disk_report
from shardkv.node.storage.store import Store
from shardkv.node.storage.store_model import StoreConfig
from shardkv.node.testing import failpoints
from shardkv.node.wal.model import FsyncPolicy
from shardkv.node.wal.write_ahead_log import WalOptions
from shardkv.node.watch.watch_session import WatchSession
from shardkv.node.write_failure import EXIT_RECOVER, WriteFailureMonitor

logger = logging.getLogger("shardkv.node")


class StartupError(Exception):
    """The node cannot start (port taken, data directory unusable, corrupt WAL, ...): the
    message says what and where; ``shardkv node`` prints it and exits 1."""


Hook = Callable[["NodeServer"], Awaitable[None]]

# The graceful stop's bounds (node/stop_budget.py): a stop hook that has not returned in
# HOOK_BOUND_S (or the handoff's own bound, if longer) is logged with its stack and left
# behind; the store's close keeps STORE_CLOSE_RESERVE_S of the budget; tasks still running
# after the stop get LEFTOVER_WAIT_S to end once cancelled.
HOOK_BOUND_S = 5.0
STORE_CLOSE_BOUND_S = 10.0
STORE_CLOSE_RESERVE_S = 3.0
LEFTOVER_WAIT_S = 2.0


class NodeServer:
    """One storage node. ``app`` may be given more routes (replication, admin) before
    :meth:`start`; ``ctx`` is what operations see (the role, the ring version).

    Parts that live beside the server (the coordinator link, replication) plug in through
    ``on_ready`` (run once the store is open, before ``/ready`` turns 200) and ``on_stop``
    (run first thing on a graceful stop, while the store is still open)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = NodeMetrics()
        self.ctx = NodeContext(limits=Limits(max_value_bytes=config.max_value_bytes,
                                             max_answer_bytes=config.max_answer_bytes),
                               node_id=config.node_id)
        self.state = "starting"
        self.url: str | None = None
        self.store: Store | None = None
        self._started_at = time.monotonic()
        self._connections: set[RpcConnection] = set()
        self._runner: web.AppRunner | None = None
        self.metrics.rpc_inflight.set_function(
            lambda: sum(c.inflight for c in self._connections))
        self.exit_code = 0
        self.exit_requested = asyncio.Event()
        self._failure_watch: asyncio.Task[None] | None = None
        self.stop_overran: list[str] = []  # the stop steps that ran out of their bound
        self.on_ready: list[Hook] = []
        self.on_stop: list[Hook] = []
        self.gate = ConnectionGate(config.connection_limits, registry=self.metrics.registry)
        self.lean_lane: LeanLane | None = None  # made by start(), in the running loop
        self.app = self._build_app()
        self.membership: ClusterMembership | None = None
        if not config.standalone:
            self.membership = ClusterMembership(self)
            self.membership.install()
        # WAL shipping (node/replication/primary.py, node/replication/replica.py), the commit
        # gate, replica reads and fencing, driven by the membership's placements.
        self.replication = NodeReplication(self)
        self.replication.install()
        # Online resharding (node/migration/): routes, the write fence, export and import.
        self.migration: MigrationService | None = None
        if self.membership is not None:
            self.migration = MigrationService(self)
            self.migration.install()
        # Rolling restarts (docs/rolling-restarts.md): a stopping primary hands its shard to
        # a replica first; a replica is ready only once caught up.
        if self.membership is not None:
            PrimaryHandoff(self).install()
            self.ctx.catch_up = lambda: catch_up_state(self)
        # Continuous WAL archiving for point-in-time restore (docs/backup.md).
        if config.archive_to:
            WalArchiver(self, config.archive_to, config.archive_interval_s).install()

    # -- the app ---------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # The largest legitimate body is a 32 MiB batch; aiohttp refuses more before reading.
        self.guard = InternalGuard(self.config.listen_host)
        self.rest = rest = RestApi(self.config, self.ctx, self.metrics, lambda: self.state,
                                   self._started_at)
        # One middleware (the gate's accounting, the internal-route guard, the last line
        # for errors) and a fast lane for GET/PUT of a key: node/api/front_door.py.
        self.front_door = FrontDoor(self.gate, self.guard, rest)
        app = web.Application(client_max_size=MAX_FRAME_BYTES + (1 << 20),
                              middlewares=[self.front_door.middleware])
        app.add_routes(rest.routes())
        # /v1/watch is a client endpoint like /v1/rpc: the same guard (not cluster-internal)
        # and the same connection limits apply to it.
        app.add_routes([web.get("/v1/rpc", self._rpc), web.get("/v1/watch", self._watch)])
        # Storage and replication events at the subscriber's interval (docs/events.md).
        self.events_feed = EventsFeed(lambda: self.store, self._replication_status,
                                      self.config.node_id)
        app.add_routes([web.get("/v1/events", self.events_feed.handle)])
        app.add_routes(DiskAdmin(lambda: self.store, self.metrics).routes())
        app.add_routes(BackupExport(lambda: self.store, self._backup_identity).routes())
        app.add_routes(BackupImport(lambda: self.ctx).routes())
        app.on_shutdown.append(self._drain_connections)
        return app

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        # Batched messages if the client offers them and this node allows them
        # (cluster/rpc_batches.py); otherwise one frame per message, as an old node does.
        ws = web.WebSocketResponse(max_msg_size=FRAME_READ_LIMIT, compress=False,
                                   autoping=True, protocols=rpc_batches.protocols())
        await ws.prepare(request)
        connection = RpcConnection(ws, self.ctx, self.metrics,
                                   self.config.max_inflight_per_connection)
        transport = request.transport
        connection.on_message = lambda: self.gate.delivered(transport)
        self._connections.add(connection)
        self.metrics.rpc_connections.inc()
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)
            self.metrics.rpc_connections.dec()
        return ws

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        """A key watch (node/watch/watch_session.py)."""
        ws = web.WebSocketResponse(max_msg_size=1 << 20, compress=False, autoping=True,
                                   heartbeat=30.0)
        await ws.prepare(request)
        config = self.config
        session = WatchSession(ws, self.ctx, self._shard_name,
                               max_events=config.watch_buffer_events,
                               max_bytes=config.watch_buffer_bytes,
                               send_timeout_s=config.watch_send_timeout_s,
                               query=request.query, transport=request.transport)
        self.metrics.watch_sessions.inc()
        try:
            await session.serve()
        finally:
            self.metrics.watch_sessions.dec()
            self.metrics.watch_events.inc(session.events_sent)
            if session.slow_consumer:
                self.metrics.watch_slow_consumers.inc()
            if not ws.closed:
                await ws.close()
        return ws

    def _replication_status(self) -> dict[str, Any] | None:
        replication = getattr(self, "replication", None)  # built after the app
        return None if replication is None else dict(replication.status())

    def _backup_identity(self) -> dict[str, Any]:
        """Who answers a backup export (node/backup/export.py)."""
        return {"shard": self._shard_name(), "role": self.ctx.role,
                "node": self.ctx.node_id or self.config.node_id or self.url or "",
                "ring_version": self.ctx.ring_version}

    def _shard_name(self) -> str:
        """The shard this node serves, as watch events name it."""
        membership = self.membership
        shard = membership.shard if membership is not None else None
        return shard or self.config.shard or "default"

    async def _drain_connections(self, app: web.Application) -> None:
        if self.store is not None:  # watches end first: they would wait for writes forever
            self.store.watch_hub.reset(self.store.applied_lsn, "the node is stopping")
        grace = self.config.shutdown_grace_s
        drains = [c.drain(grace) for c in self._connections]
        if self.lean_lane is not None:
            drains.append(self.lean_lane.shutdown(grace))
        if drains:
            await asyncio.gather(*drains, return_exceptions=True)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, then recover the store, then serve. Raises StartupError."""
        config = self.config
        # lingering_time: after refusing a body unread (413), aiohttp keeps discarding what the
        # client still sends so that it can read the answer; 10 s by default, which also
        # holds up a graceful stop. One second is plenty on the networks a node lives on.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=config.shutdown_grace_s, lingering_time=1.0,
                               keepalive_timeout=config.connection_limits.idle_timeout_s)
        await runner.setup()
        server = runner.server
        assert server is not None
        server.request_handler = self.front_door.handler(server.request_handler)
        if config.lean_rest:  # GET/PUT of a key without aiohttp's per-request objects
            self.lean_lane = LeanLane(self.rest, self.gate, server,
                                      idle_timeout_s=config.connection_limits.idle_timeout_s)
        site = LimitedSite(runner, config.listen_host, config.listen_port, self.gate,
                           self.lean_lane.protocol if self.lean_lane is not None else None)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"cannot listen on {config.listen}: {exc.strerror or exc}") \
                from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{port}"
        logger.info(
            "listening on %s, data in %s", self.url, config.data_dir,
            extra=log_fields(url=self.url, listen=f"{shown_host}:{port}",
                             data_dir=str(config.data_dir), engine=config.engine,
                             fsync=config.fsync, node_id=config.node_id, shard=config.shard,
                             coordinators=list(config.coordinators), pid=os.getpid()),
        )
        await self._open_store()
        for hook in self.on_ready:
            await hook(self)
        self.state = "ready"
        self.metrics.ready.set(1)
        monitor = WriteFailureMonitor(
            config.data_dir, min(config.wal_segment_bytes, 64 << 20),
            lambda: self.store.write_failure if self.store is not None else None,
            self._write_failed, lambda: self.request_exit(EXIT_RECOVER))
        self._failure_watch = asyncio.create_task(monitor.run(), name="write-failure-watch")
        logger.info("ready", extra=log_fields(url=self.url, role=self.ctx.role))

    async def _open_store(self) -> None:
        config = self.config
        store_config = StoreConfig(
            data_dir=config.data_dir,
            engine=config.engine,
            wal=WalOptions(fsync=FsyncPolicy(config.fsync),
                           fsync_interval_ms=config.fsync_interval_ms,
                           segment_bytes=config.wal_segment_bytes,
                           on_sync=self.metrics.on_wal_sync),
            retain_wal_entries=config.retain_wal_entries,
            session_ttl_s=config.session_ttl_s,
            max_sessions=config.max_sessions,
            limits=self.ctx.limits,
            snapshot_wal_bytes=config.snapshot_wal_bytes,
            retain_wal_bytes=config.retain_wal_bytes,
            snapshot_wal_ratio=config.snapshot_wal_ratio,
            snapshot_min_wal_bytes=config.snapshot_min_wal_bytes,
            keep_snapshots=config.keep_snapshots,
            low_disk_bytes=config.low_disk_bytes,
        )
        started = time.perf_counter()
        try:
            store = await Store.open(store_config)
            if not config.standalone:
                # In a cluster only the primary deletes expired keys (replicas get its
                # deletes through the log): off until the map says this node is primary.
                # No await since open(): the sweeper has not run a round yet.
                await store.set_sweeper(False)
        except Exception as exc:
            # A corrupt WAL or snapshot, an unreadable directory, a wrong engine: the node must
            # not serve. The exception's message names the file and offset where it can.
            raise StartupError(f"cannot open the store in {config.data_dir}: "
                               f"{type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - started
        self.store = store
        self.ctx.store = store
        self.metrics.recovery_seconds.set(seconds)
        self.metrics.watch_store(lambda: self.store.stats() if self.store else None)
        self.metrics.watch_disk(lambda: disk_report(self.store) if self.store else None)
        stats = store.stats()
        recovery = stats.recovery
        logger.info(
            "store open: lsn %d, %d keys, recovered in %.3fs", store.last_lsn,
            store.key_count, seconds,
            extra=log_fields(lsn=store.last_lsn, keys=store.key_count, epoch=store.epoch,
                             recovery_s=round(seconds, 4), engine=config.engine,
                             snapshot_lsn=recovery.snapshot_lsn,
                             replayed_entries=recovery.replayed_entries),
        )

    def _write_failed(self, reason: str) -> None:
        if self.state == "ready":
            self.state = "failed"
            self.metrics.ready.set(0)
        link = self.membership.link if self.membership is not None else None
        if link is not None:  # a primary that cannot write should be failed over, not waited on
            link.stop_heartbeats()

    def request_exit(self, code: int) -> None:
        """Ask ``serve`` to stop the node gracefully and exit with ``code``."""
        self.exit_code = code
        self.exit_requested.set()

    async def stop(self) -> None:
        """Graceful stop (idempotent): see the module docstring for the order."""
        if self.state == "stopped":
            return
        if self._failure_watch is not None:
            self._failure_watch.cancel()
        self.state = "stopping"
        self.metrics.ready.set(0)
        logger.info("stopping", extra=log_fields(url=self.url,
                                                 rpc_connections=len(self._connections)))
        config = self.config
        budget = StopBudget(config.stop_budget_s(), reserve_s=STORE_CLOSE_RESERVE_S)
        # Each hook may take as long as the handoff's own bound (the first hook), no more.
        hook_bound = max(HOOK_BOUND_S, config.handoff_timeout_s + 3.0)
        if failpoints.ARMED:
            await budget.step("failpoint-stop_before_hooks",
                              failpoints.hit("stop_before_hooks"), hook_bound)
        for hook in self.on_stop:
            await budget.step(getattr(hook, "__qualname__", repr(hook)), hook(self), hook_bound)
        if self._runner is not None:
            await budget.step("http-runner-cleanup", self._runner.cleanup(),
                              config.shutdown_grace_s + 1.0)
            self._runner = None
        store, self.store = self.store, None
        self.ctx.store = None
        if store is not None:
            # The store logs its own "store closed" with the LSN; a failed disk may refuse
            # the last flush (logged by the step): recovery redoes it.
            await budget.step("store-close", store.close(), STORE_CLOSE_BOUND_S, last=True)
        self.stop_overran = budget.overran
        self.state = "stopped"


async def serve(config: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT; 0 after a graceful stop, 1 if it could not start."""
    node = NodeServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second signal: exiting without a graceful stop")
            os._exit(1)
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            await node.start()
        except StartupError as exc:
            logger.error("%s", exc)
            await node.stop()
            return 1
        exiting = asyncio.ensure_future(node.exit_requested.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        exiting.cancel()
        stopping.cancel()
        await node.stop()
        stuck = await cancel_leftovers(LEFTOVER_WAIT_S)
        logger.info("stopped", extra=log_fields(url=node.url, exit_code=node.exit_code,
                                                overran=node.stop_overran,
                                                stuck_tasks=len(stuck)))
        if stuck:  # asyncio.run would wait for them forever: the store is closed, so go
            logging.shutdown()
            os._exit(node.exit_code)
        return node.exit_code
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def run_node(config: NodeConfig) -> int:
    """The ``shardkv node`` process body."""
    setup_logging("node", config.log_level)
    gc_thresholds.apply()
    return event_loop.run(serve(config))
