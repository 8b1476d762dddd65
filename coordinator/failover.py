"""Failover: the coordinator leader's failure detector, and planned switchover.

Automatic failover. The leader checks every shard a few times a second. A primary is dead
once the leader has heard no heartbeat from it for ``timeout_s`` (3 s by default; a node
never heard from in this leader's term is given the liveness grace period first, so a leader
change never looks like every node dying). Then:

1. **Probe** every other member directly (``GET /v1/replication``) for its log's end *now*.
   Heartbeats are up to a second old; the dead primary's last writes may have reached one
   replica and not the other, and promoting the one that lacks a majority-acknowledged write
   would make the other drop it when it follows. With the primary gone, replicas' logs stop
   moving, so a fresh probe sees the final positions.
2. **Quorum check**: a write acknowledged with ``majority`` is on at least ``n // 2 + 1`` of
   the ``n`` members. Unless enough members answer the probe that every such set includes
   one of them (``n - (n // 2 + 1) + 1`` of the replicas), the shard stays without a primary:
   unavailable, never silently rolled back.
3. **Pick** the answering member with the highest (epoch, LSN) (ties: the lowest id, so two
   leaders in a row decide the same).
   Nor while the old primary may still hold a lease from its shard's majority: replicas
   report the lease they granted (``promise``), and with ``n // 2`` of them still bound the
   primary is alive to its shard (``still_leased``); the best candidate must be unbound.
4. **Promote** through Raft: ``set_primary(shard, node, epoch + 1)``. The epoch raise is the
   fencing token: replicas refuse an older epoch's stream, and the old primary, whose lease
   ran out before ``timeout_s`` (``node/replication/lease.py``),
   finds on return that it is a replica.

Planned switchover (``switchover``): fence the primary (it stops acknowledging writes and
reports its last LSN), wait until the target replica holds that LSN, then promote it. No
acknowledged write can be lost, and the pause is measured and returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from shardkv.cluster import internal_routes as routes
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import SHARD_ACTIVE, ClusterMap
from shardkv.cluster.control_messages import FenceRequest, position_from_status
from shardkv.cluster.errors import InvalidArgument, NotFound, ShardKVError, Unavailable
from shardkv.cluster.peer_auth import COORDINATOR, signed_headers
from shardkv.cluster.structured_log import log_fields
from shardkv.cluster.timing import DEFAULT_FAILOVER_TIMEOUT_S
from shardkv.coordinator.liveness import UNKNOWN, Liveness

logger = logging.getLogger("shardkv.coordinator.failover")

DEFAULT_TIMEOUT_S = DEFAULT_FAILOVER_TIMEOUT_S  # the timing contract, cluster/timing.py
CHECK_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 0.8

Probe = Callable[[str, str], Awaitable["MemberPosition | None"]]
Propose = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class MemberPosition:
    """Where a member's log ends, as it answered a probe."""

    node_id: str
    epoch: int
    lsn: int
    promised_s: float = 0.0  # lease still granted to the current primary's epoch (or older)

    @property
    def rank(self) -> tuple[int, int]:
        return (self.epoch, self.lsn)


@dataclass(frozen=True, slots=True)
class Promotion:
    shard: str
    old_primary: str | None
    new_primary: str
    epoch: int
    positions: tuple[MemberPosition, ...]


def replicas_needed(members: int) -> int:
    """How many replicas must answer before one can be promoted (see step 2)."""
    if members < 2:
        return 0
    return members - (members // 2 + 1) + 1


def choose_successor(
    shard: str, members: list[str], old_primary: str | None, epoch: int,
    positions: list[MemberPosition],
) -> Promotion | None:
    """Steps 2 and 3: the promotion to make, or None when too few members answered, or when
    the old primary may still hold a majority lease (``still_leased``)."""
    answered = [p for p in positions if p.node_id in members and p.node_id != old_primary]
    if not answered or len(answered) < replicas_needed(len(members)):
        return None
    best = min(answered, key=lambda p: (-p.epoch, -p.lsn, p.node_id))
    if still_leased(len(members), answered) or best.promised_s > 0:
        return None
    return Promotion(shard, old_primary, best.node_id, epoch + 1, tuple(answered))


def still_leased(members: int, answered: list[MemberPosition]) -> bool:
    """Whether the old primary may still hold a lease granted by its shard's majority: it
    needs ``members // 2`` grants besides its own, and a replica that answers with a promise
    still running may be one of them (``node/replication/majority_lease.py``). Then the
    primary is alive to its shard (only the coordinators lost it), or its lease will run out
    within one grant: either way, not now. The replicas' promise is what makes a promotion
    safe even without this check (they will not follow the new epoch before it runs out);
    the check keeps the coordinators from deposing a primary that its shard still serves."""
    return members >= 2 and sum(1 for p in answered if p.promised_s > 0) >= members // 2


def primary_is_dead(liveness: Liveness, node_id: str, timeout_s: float) -> bool:
    """No heartbeat for ``timeout_s`` (a never-heard node only after the grace period)."""
    report = liveness.report(node_id)
    if report is None:
        return liveness.state(node_id) != UNKNOWN
    return liveness.now() - report.received_at >= timeout_s


async def probe_over_http(session: aiohttp.ClientSession, node_id: str,
                          url: str) -> MemberPosition | None:
    """``GET {url}/v1/replication`` -> the member's (epoch, LSN); None if it does not answer."""
    try:
        async with session.get(routes.url_of(url, routes.REPLICATION_STATUS),
                               headers={"Accept": wire.MSGPACK},
                               timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as resp:
            if resp.status != 200:
                return None
            body = wire.unpack(await resp.read())
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None
    position = position_from_status(body, node_id)
    if position is None:
        return None
    return MemberPosition(node_id, *position, promised_s=promise_left_s(body))


def promise_left_s(body: Mapping[str, Any]) -> float:
    """Seconds left on the lease a member granted (0 when none, or an older node)."""
    promise = body.get("promise")
    if not isinstance(promise, dict):
        return 0.0
    left = promise.get("remaining_s")
    if isinstance(left, bool) or not isinstance(left, int | float):
        return 0.0
    return max(0.0, float(left))


@dataclass
class FailureDetector:
    """The leader task: see the module docstring. ``run`` until cancelled."""

    current_map: Callable[[], ClusterMap]
    liveness: Liveness
    propose: Propose
    probe: Probe
    timeout_s: float = DEFAULT_TIMEOUT_S
    interval_s: float = CHECK_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    failovers: int = 0
    refused: int = 0
    durations_s: list[float] = field(default_factory=list)  # silence seen -> promoted
    _dead_since: dict[str, float] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("failure detector round failed")
            await asyncio.sleep(self.interval_s)

    async def check_once(self) -> list[Promotion]:
        cluster_map = self.current_map()
        done: list[Promotion] = []
        for shard_id, shard in sorted(cluster_map.shards.items()):
            primary = shard.primary
            if shard.state != SHARD_ACTIVE or primary is None or len(shard.members) < 2:
                continue
            if not primary_is_dead(self.liveness, primary, self.timeout_s):
                self._dead_since.pop(shard_id, None)
                continue
            self._dead_since.setdefault(shard_id, self.clock())
            promotion = await self._fail_over(cluster_map, shard_id)
            if promotion is not None:
                done.append(promotion)
        return done

    async def _fail_over(self, cluster_map: ClusterMap, shard_id: str) -> Promotion | None:
        shard = cluster_map.shards[shard_id]
        others = [m for m in shard.members if m != shard.primary]
        answers = await asyncio.gather(*(
            self.probe(m, cluster_map.node_url(m) or "") for m in others
        ))
        positions = [p for p in answers if p is not None]
        promotion = choose_successor(shard_id, shard.members, shard.primary, shard.epoch,
                                     positions)
        if promotion is None:
            self.refused += 1
            logger.warning("primary is dead to the coordinators but too few replicas answer, "
                           "or its shard still grants it a lease: not promoting now",
                           extra=log_fields(shard=shard_id, primary=shard.primary,
                                            answered=[p.node_id for p in positions],
                                            members=shard.members))
            return None
        try:
            await self.propose({"op": "set_primary", "shard": shard_id,
                                "node": promotion.new_primary, "epoch": promotion.epoch})
        except ShardKVError as exc:
            # STALE_EPOCH: someone else (an operator, a previous leader) already changed it.
            logger.warning("failover proposal refused", extra=log_fields(
                shard=shard_id, error=exc.message))
            return None
        self.failovers += 1
        started = self._dead_since.pop(shard_id, None)
        if started is not None:
            self.durations_s.append(self.clock() - started + self.timeout_s)
        logger.warning("failed over", extra=log_fields(
            shard=shard_id, old_primary=promotion.old_primary,
            new_primary=promotion.new_primary, epoch=promotion.epoch,
            positions={p.node_id: [p.epoch, p.lsn] for p in promotion.positions}))
        return promotion


# ---------------------------------------------------------------------------- switchover


@dataclass(frozen=True, slots=True)
class Switchover:
    shard: str
    old_primary: str
    new_primary: str
    epoch: int
    fenced_lsn: int
    pause_s: float


async def switchover(
    session: aiohttp.ClientSession, cluster_map: ClusterMap, propose: Propose, shard_id: str,
    target: str | None = None, *, catch_up_s: float = 5.0,
) -> Switchover:
    """Planned primary change with zero lost writes (see the module docstring)."""
    shard = cluster_map.shards.get(shard_id)
    if shard is None:
        raise NotFound(f"no shard {shard_id!r}")
    old = shard.primary
    if old is None:
        raise Unavailable(f"shard {shard_id} has no primary to switch from")
    old_url = cluster_map.node_url(old) or ""
    candidates = [m for m in shard.members if m != old]
    if target is not None and target not in candidates:
        raise InvalidArgument(f"{target!r} is not a replica of shard {shard_id}",
                              members=shard.members)
    if target is None:
        positions = [p for p in await asyncio.gather(*(
            probe_over_http(session, m, cluster_map.node_url(m) or "") for m in candidates))
            if p is not None]
        if not positions:
            raise Unavailable(f"no replica of shard {shard_id} answers")
        target = min(positions, key=lambda p: (-p.epoch, -p.lsn, p.node_id)).node_id
    target_url = cluster_map.node_url(target) or ""
    started = time.monotonic()
    fence: FenceRequest = {"epoch": shard.epoch}
    fenced = await _node_call(session, old_url, routes.FENCE, fence)
    fenced_lsn = int(fenced["last_lsn"])
    try:
        deadline = started + catch_up_s
        while True:
            position = await probe_over_http(session, target, target_url)
            # ... and no longer bound by a lease granted to the old primary (the fence
            # released it), or its new epoch could not be served for a whole grant.
            if position is not None and position.lsn >= fenced_lsn and not position.promised_s:
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"{target} did not catch up to lsn {fenced_lsn} within "
                                  f"{catch_up_s}s; the switchover was abandoned")
            await asyncio.sleep(0.02)
        result = await propose({"op": "set_primary", "shard": shard_id, "node": target,
                                "epoch": shard.epoch + 1})
    except BaseException:
        with contextlib.suppress(ShardKVError, aiohttp.ClientError, TimeoutError, OSError):
            await _node_call(session, old_url, routes.UNFENCE, fence)
        raise
    pause = time.monotonic() - started
    logger.info("switchover done", extra=log_fields(
        shard=shard_id, old_primary=old, new_primary=target, epoch=result.get("epoch"),
        fenced_lsn=fenced_lsn, pause_s=round(pause, 4)))
    return Switchover(shard_id, old, target, int(result.get("epoch", shard.epoch + 1)),
                      fenced_lsn, pause)


async def _node_call(session: aiohttp.ClientSession, url: str, path: str,
                     body: Mapping[str, Any]) -> dict[str, Any]:
    data = wire.pack(dict(body))
    try:
        async with session.post(routes.url_of(url, path), data=data,
                                headers={"Content-Type": wire.MSGPACK,
                                         "Accept": wire.MSGPACK,
                                         **signed_headers("POST", path, data, COORDINATOR)},
                                timeout=aiohttp.ClientTimeout(total=5.0)) as resp:
            answer = wire.unpack(await resp.read()) if resp.content_length != 0 else {}
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Unavailable(f"{url}{path}: {exc}") from None
    if status != 200 or not isinstance(answer, dict):
        raise Unavailable(f"{url}{path} answered {status}: {answer!r}")
    return answer
