"""One coordinator process: Raft member, map server, admin API.

``Coordinator`` wires the parts together: the Raft member (pysyncobj on its own thread, see
raft_bridge.py), the state machine it applies, the map served to watchers, the leader's
in-memory liveness table, and the HTTP app (map_api, admin_api, observability). It also runs
three small loops: announce this coordinator's HTTP URL in the map (so followers can name the
leader's URL in redirects), bootstrap the shards when asked on the command line, and notice
when this member becomes leader (a new term restarts the liveness grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from pysyncobj import SyncObjConf
from pysyncobj.syncobj import SyncObjException
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.durable_file import ensure_dir
from shardkv.cluster.errors import ShardKVError, Unavailable
from shardkv.cluster.peer_auth import PeerVerifier
from shardkv.cluster.structured_log import log_fields
from shardkv.coordinator import (
    admin_api,
    dashboard,
    events_api,
    failover_api,
    handoff_api,
    leadership_transfer,
    map_api,
    migration_api,
    migration_driver,
    observability,
)
from shardkv.coordinator.config import CoordinatorConfig, parse_host_port
from shardkv.coordinator.event_log import ClusterEventLog
from shardkv.coordinator.http_io import (
    COORDINATOR_KEY,
    MAX_BODY,
    errors_as_values,
    raise_for_result,
)
from shardkv.coordinator.liveness import Liveness
from shardkv.coordinator.liveness_events import LivenessWatcher
from shardkv.coordinator.map_watch import MapWatch
from shardkv.coordinator.node_protocol_guard import node_protocol_guard
from shardkv.coordinator.node_stats import NodeStatsSampler
from shardkv.coordinator.peer_guard import peer_guard
from shardkv.coordinator.raft_bridge import (
    DurableJournalPath,
    MapRaft,
    RaftBridge,
    snapshot_reader,
    snapshot_writer,
)
from shardkv.coordinator.state_machine import MapStateMachine

log = logging.getLogger("shardkv.coordinator")


class Coordinator:
    def __init__(self, config: CoordinatorConfig) -> None:
        config.validate()
        self.config = config
        self.machine = MapStateMachine()
        self.watch = MapWatch()
        # Cluster events for /v1/events, derived from each applied map (event_log.py).
        self.events = ClusterEventLog(lambda: self.ready_flag)
        self.watch.listeners.append(self.events.on_map)
        self.node_stats = NodeStatsSampler(
            lambda: {n: i.to_dict() for n, i in self.watch.current.nodes.items()})
        self.liveness_events = LivenessWatcher(self)  # node.liveness, while feeds are open
        self.liveness = Liveness(config.suspect_s, config.dead_s, config.grace_s)
        self.raft_ids = {config.raft: config.id} | {addr: cid for cid, addr in config.peers.items()}
        self.bridge: RaftBridge | None = None
        self.peer_verifier = PeerVerifier(config.cluster_token) if config.cluster_token else None
        self.ready_flag = False
        self.led_term: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self._stopped = asyncio.Event()
        # Work that only the leader does (the failure detector of the replication layer):
        # each factory is started when this member becomes leader and cancelled when it
        # stops being leader, so at most one coordinator acts on liveness at a time.
        self.leader_task_factories: list[Callable[[Coordinator], Coroutine[Any, Any, None]]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self.failover = failover_api.FailoverService(self)  # detector: a leader task
        migration_driver.install(self)  # online migrations are driven by the leader

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(ensure_dir, cfg.data_dir)

        def on_applied(cluster_map: ClusterMap, _result: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self.watch.publish, cluster_map)

        def on_restored(cluster_map: ClusterMap) -> None:
            on_applied(cluster_map, {})

        def on_ready() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._mark_ready)

        t = cfg.timings
        conf = SyncObjConf(
            journalFile=DurableJournalPath(os.path.join(cfg.data_dir, "raft.journal")),
            fullDumpFile=os.path.join(cfg.data_dir, "raft.snapshot"),
            serializer=snapshot_writer(self.machine),
            deserializer=snapshot_reader(self.machine, on_restored),
            useFork=False,
            password=cfg.raft_password or None,
            dynamicMembershipChange=True,
            raftMinTimeout=t.election_min,
            raftMaxTimeout=t.election_max,
            appendEntriesPeriod=t.append_entries_period,
            connectionTimeout=t.connection_timeout,
            connectionRetryTime=t.connection_retry,
            leaderFallbackTimeout=t.leader_fallback,
            logCompactionMinEntries=t.compaction_min_entries,
            logCompactionMinTime=t.compaction_min_time,
            onReady=on_ready,
            commandsWaitLeader=True,
            # Map changes are rare and small: send each at once (and wake the Raft thread
            # through its pipe) instead of waiting for the next append-entries period.
            appendEntriesUseBatch=False,
            bindRetryTime=0.5,
            maxBindRetries=10,
        )
        partners = list(cfg.peers.values())
        # Opening the journal reads (and may repair) a file: keep it off the loop.
        raft = await asyncio.to_thread(MapRaft, cfg.raft, partners, conf, self.machine,
                                       on_applied)
        self.bridge = RaftBridge(raft, loop)
        host, port = parse_host_port(cfg.listen, "--listen")
        try:
            try:
                await asyncio.to_thread(raft.waitBinded)
            except SyncObjException:
                raise OSError(f"cannot bind the Raft address {cfg.raft}") from None
            app = self.build_app()
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                         shutdown_timeout=2.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port)
            await site.start()
        except BaseException:
            await asyncio.to_thread(raft.destroy_synchronous)
            raise
        addresses = self._runner.addresses
        self.http_port = int(addresses[0][1]) if addresses else port
        if port == 0 and not cfg.advertise_url:
            cfg.advertise_url = f"http://{host}:{self.http_port}"
        self._tasks = [
            asyncio.create_task(self._announce(), name="announce"),
            asyncio.create_task(self._leadership_loop(), name="leadership"),
        ]
        if cfg.init_shards:
            self._tasks.append(asyncio.create_task(self._bootstrap(), name="bootstrap"))
        log.info(
            "coordinator started",
            extra=log_fields(
                id=cfg.id, listen=f"{host}:{self.http_port}", url=cfg.url, raft=cfg.raft,
                data_dir=cfg.data_dir, peers=cfg.peers,
                raft_encrypted=bool(cfg.raft_password),
                admin_auth=bool(cfg.admin_token),
                cluster_auth=self.peer_verifier is not None,
            ),
        )

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[errors_as_values, peer_guard, node_protocol_guard],
            client_max_size=MAX_BODY)
        app[COORDINATOR_KEY] = self
        map_api.add_routes(app)
        admin_api.add_routes(app)
        failover_api.add_routes(app)
        handoff_api.add_routes(app)
        migration_api.add_routes(app)
        observability.add_routes(app)
        events_api.add_routes(app)
        dashboard.add_routes(app)
        return app

    async def stop(self) -> None:
        if self.bridge is not None:
            # A leader hands Raft leadership over first, so the group is not leaderless
            # for an election timeout (coordinator/leadership_transfer.py).
            with contextlib.suppress(Exception):
                await leadership_transfer.transfer_leadership(self.bridge)
        self._cancel_leader_tasks()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.watch.close()
        await self.node_stats.close()
        await self.liveness_events.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.bridge is not None:
            await asyncio.to_thread(self.bridge.raft.destroy_synchronous)
        log.info("coordinator stopped", extra=log_fields(id=self.config.id))
        self._stopped.set()

    # -- views -----------------------------------------------------------------------------

    def _mark_ready(self) -> None:
        self.ready_flag = True

    @property
    def raft(self) -> RaftBridge:
        if self.bridge is None:
            raise Unavailable("the coordinator is starting")
        return self.bridge

    def leader_id(self) -> str | None:
        addr = self.raft.leader_addr()
        if addr is None:
            return None
        if addr in self.raft_ids:
            return self.raft_ids[addr]
        for cid, info in self.watch.current.coordinators.items():
            if info.raft == addr:
                return cid
        return addr

    def leader_url(self) -> str | None:
        leader = self.leader_id()
        if leader is None:
            return None
        if leader == self.config.id:
            return self.config.url
        return self.watch.current.coordinator_url(leader) or self.config.peer_urls.get(leader)

    def is_leader(self) -> bool:
        return self.bridge is not None and self.bridge.is_leader()

    def is_ready(self) -> bool:
        return (
            self.bridge is not None
            and self.ready_flag
            and self.watch.loaded
            and self.leader_id() is not None
        )

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        """Commit a map command through Raft (any member may propose: pysyncobj forwards a
        follower's proposal to the leader) and return its result, errors raised."""
        result = await self.raft.submit(command, self.config.commit_timeout)
        # The result is computed on this member when it applied the entry; the watch may
        # still have the publish in flight on the loop: let it run before answering.
        await asyncio.sleep(0)
        return raise_for_result(result)

    # -- background loops ---------------------------------------------------------------

    async def _announce(self) -> None:
        """Record this coordinator's URL and Raft address in the map (retrying until done)."""
        cfg = self.config
        while True:
            info = self.watch.current.coordinators.get(cfg.id)
            if info is not None and info.url == cfg.url and info.raft == cfg.raft:
                return
            if self.leader_id() is not None:
                try:
                    await self.propose({"op": "register_coordinator", "id": cfg.id,
                                        "url": cfg.url, "raft": cfg.raft})
                    continue
                except ShardKVError as exc:
                    log.debug("announce retry", extra=log_fields(error=exc.message))
            await asyncio.sleep(0.2)

    async def _bootstrap(self) -> None:
        cfg = self.config
        while True:
            if self.watch.current.shards:
                return
            if self.leader_id() is not None:
                try:
                    result = await self.propose({
                        "op": "bootstrap", "shards": cfg.init_shards,
                        "replication_factor": cfg.replication_factor,
                    })
                    log.info("cluster bootstrapped", extra=log_fields(**result))
                    return
                except ShardKVError as exc:
                    if not exc.retryable:
                        log.error("bootstrap refused", extra=log_fields(error=exc.message))
                        return
            await asyncio.sleep(0.2)

    async def _leadership_loop(self) -> None:
        while True:
            if self.is_leader():
                term = self.raft.raft.raftCurrentTerm
                if term != self.led_term:
                    self._cancel_leader_tasks()
                    self.led_term = term
                    self.liveness.start_term()
                    log.info("became leader", extra=log_fields(id=self.config.id, term=term))
                    self._leader_tasks = [
                        asyncio.create_task(factory(self), name=f"leader-{i}")
                        for i, factory in enumerate(self.leader_task_factories)
                    ]
            elif self.led_term is not None and not self.raft.raft._isLeader():
                log.info("no longer leader", extra=log_fields(id=self.config.id))
                self.led_term = None
                self._cancel_leader_tasks()
            await asyncio.sleep(0.1)

    def _cancel_leader_tasks(self) -> None:
        for task in self._leader_tasks:
            task.cancel()
        self._leader_tasks = []

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
