"""Failover in the coordinator process: the leader-only detector task and the admin routes.

``FailoverService(coord)``, owned by the ``Coordinator`` as its ``failover`` attribute,
registers the failure detector (``coordinator/failover.py``) as a leader task, so exactly one
coordinator acts on liveness at a time and a new leader starts with the liveness grace
period, and keeps the detector's counters across terms. ``add_routes`` adds:

- ``POST /admin/shards/{shard}/failover`` ``{"target"?: node, "catch_up_s"?: s}``: planned
  switchover (fence, catch up, promote); answers the new primary, the epoch and the pause;
- ``GET /admin/failover``: the detector's counters and the measured failover durations.

The failover timeout is the timing contract's ``failover_timeout_s`` (``cluster/timing.py``,
``SHARDKV_FAILOVER_TIMEOUT_S``, default 3 s), validated with the coordinator's config; a
node's lease is derived from the same setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from shardkv.cluster.errors import InvalidArgument, NotPrimary, Unavailable
from shardkv.coordinator import observability
from shardkv.coordinator.failover import (
    FailureDetector,
    MemberPosition,
    probe_over_http,
    switchover,
)
from shardkv.coordinator.http_io import (
    COORDINATOR_KEY,
    coordinator_of,
    only_fields,
    read_object,
    respond,
)

if TYPE_CHECKING:
    from shardkv.coordinator.server import Coordinator


class FailoverService:
    """The failure detector's home in one coordinator: started as a leader task, its
    counters kept across this member's terms as leader (for ``/admin/failover``)."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.detector: FailureDetector | None = None
        coord.leader_task_factories.append(self._run_detector)

    @property
    def timeout_s(self) -> float:
        return self.coord.config.timing.failover_timeout_s

    async def _run_detector(self, coord: Coordinator) -> None:
        async with aiohttp.ClientSession() as session:

            async def probe(node_id: str, url: str) -> MemberPosition | None:
                return await probe_over_http(session, node_id, url)

            detector = FailureDetector(lambda: coord.watch.current, coord.liveness,
                                       coord.propose, probe, timeout_s=self.timeout_s)
            previous = self.detector
            if previous is not None:  # keep the history across terms of this member
                detector.durations_s = previous.durations_s
                detector.failovers = previous.failovers
            self.detector = detector
            await detector.run()


async def planned_failover(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    if coord.bridge is None or not coord.bridge.has_quorum():
        # Said at once rather than redirected to a leader this member last heard of, which
        # may be the very coordinator that is down.
        raise Unavailable("the coordinator group has no quorum: a switchover waits for it "
                          "(the shards keep serving meanwhile)", outcome="not_applied")
    if not coord.is_leader():
        raise NotPrimary("switchovers are run by the coordinator leader",
                         leader=coord.leader_id(), leader_url=coord.leader_url())
    body = await read_object(request, allow_empty=True)
    only_fields(body, {"target", "catch_up_s"})
    target = body.get("target")
    if target is not None and not isinstance(target, str):
        raise InvalidArgument("target must be a node id")
    catch_up = body.get("catch_up_s", 5.0)
    if isinstance(catch_up, bool) or not isinstance(catch_up, int | float) \
            or not 0 < catch_up <= 60:
        raise InvalidArgument("catch_up_s must be a number of seconds in (0, 60]")
    async with aiohttp.ClientSession() as session:
        done = await switchover(session, coord.watch.current, coord.propose,
                                request.match_info["shard"], target, catch_up_s=float(catch_up))
    return respond(request, {"shard": done.shard, "old_primary": done.old_primary,
                             "primary": done.new_primary, "epoch": done.epoch,
                             "fenced_lsn": done.fenced_lsn,
                             "pause_ms": round(done.pause_s * 1000, 2)})


async def failover_status(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    detector = coord.failover.detector
    return respond(request, {
        "leader": coord.is_leader(),
        "timeout_s": coord.failover.timeout_s,
        "failovers": detector.failovers if detector else 0,
        "refused": detector.refused if detector else 0,
        "durations_s": [round(d, 3) for d in detector.durations_s] if detector else [],
    })


class FailoverCollector(Collector):
    """``shardkv_failovers_total`` and ``shardkv_failovers_refused_total`` (leader only)."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord

    def collect(self) -> Iterator[Metric]:
        detector = self.coord.failover.detector
        if detector is None or not self.coord.is_leader():
            return
        yield CounterMetricFamily("shardkv_failovers", "Primaries replaced after dying.",
                                  value=detector.failovers)
        yield CounterMetricFamily("shardkv_failovers_refused", "Dead primaries left in place "
                                  "because too few replicas answered.", value=detector.refused)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/shards/{shard}/failover", planned_failover)
    app.router.add_get("/admin/failover", failover_status)

    async def register_metrics(app: web.Application) -> None:
        registry = app.get(observability.REGISTRY_KEY)
        if registry is not None:
            registry.register(FailoverCollector(app[COORDINATOR_KEY]))

    app.on_startup.append(register_metrics)
