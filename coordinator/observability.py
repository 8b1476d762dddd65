"""``/health``, ``/ready`` and ``/metrics`` for a coordinator.

``/ready`` means "can serve the map": a leader is known and this member has applied the log
up to the commit index it learned at start. Metrics are read from the Raft thread's fields at
scrape time (a custom collector, so no gauge goes stale between scrapes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from shardkv.coordinator.http_io import coordinator_of, respond


class CoordinatorCollector(Collector):
    def __init__(self, coord: Any) -> None:
        self.coord = coord

    def collect(self) -> Iterator[Metric]:
        coord = self.coord
        if coord.bridge is None:
            return
        status = coord.bridge.status()
        cluster_map = coord.watch.current
        yield GaugeMetricFamily("shardkv_raft_term", "Current Raft term", value=status["term"])
        yield GaugeMetricFamily("shardkv_raft_commit_index", "Raft commit index",
                                value=status["commit_index"])
        yield GaugeMetricFamily("shardkv_raft_last_applied", "Last Raft entry applied",
                                value=status["last_applied"])
        yield GaugeMetricFamily("shardkv_raft_is_leader", "1 if this member leads with quorum",
                                value=1 if coord.is_leader() else 0)
        yield GaugeMetricFamily("shardkv_raft_has_quorum", "1 if this member sees a quorum",
                                value=1 if status["has_quorum"] else 0)
        yield GaugeMetricFamily("shardkv_map_version", "Version of the served cluster map",
                                value=cluster_map.version)
        yield GaugeMetricFamily("shardkv_ring_version", "Version of the ring",
                                value=cluster_map.ring.version)
        yield GaugeMetricFamily("shardkv_map_shards", "Shards in the map",
                                value=len(cluster_map.shards))
        by_status = GaugeMetricFamily("shardkv_map_nodes", "Nodes in the map by status",
                                      labels=["status"])
        counts: dict[str, int] = {"up": 0, "down": 0, "draining": 0}
        for node in cluster_map.nodes.values():
            counts[node.status] = counts.get(node.status, 0) + 1
        for name, count in sorted(counts.items()):
            by_status.add_metric([name], count)
        yield by_status
        if coord.is_leader():
            live = GaugeMetricFamily("shardkv_nodes_liveness",
                                     "Nodes by heartbeat liveness (leader only)",
                                     labels=["state"])
            for state, count in coord.liveness.counts(cluster_map.nodes).items():
                live.add_metric([state], count)
            yield live


async def health(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    return respond(request, {"status": "ok", "id": coord.config.id})


async def ready(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    ok = coord.is_ready()
    body = {
        "ready": ok,
        "id": coord.config.id,
        "leader": coord.leader_id() if coord.bridge else None,
        "leader_url": coord.leader_url() if coord.bridge else None,
        "is_leader": coord.is_leader(),
        "has_quorum": coord.bridge.has_quorum() if coord.bridge else False,
        "map_version": coord.watch.current.version,
        "map_loaded": coord.watch.loaded,
    }
    return respond(request, body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    registry: CollectorRegistry = request.app[REGISTRY_KEY]
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


def add_routes(app: web.Application) -> None:
    registry = CollectorRegistry()
    registry.register(CoordinatorCollector(coordinator_of_app(app)))
    app[REGISTRY_KEY] = registry
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)


def coordinator_of_app(app: web.Application) -> Any:
    from shardkv.coordinator.http_io import COORDINATOR_KEY

    return app[COORDINATOR_KEY]
