"""Leases granted by the shard's own majority, so a primary outlives the coordinators.

Why: with the coordinator lease alone (``lease.py``), losing the coordinators' quorum
stopped every shard within seconds, although every member was healthy. Here each replica
grants its primary a lease on the replication stream, and a primary serves strong reads and
``w=one`` writes while a majority of its shard (itself included) has granted it a lease that
has not run out on its own clock.

The three parts:

- ``LeasePromise`` (every node, replica side). Granting is a promise: a node that granted
  the primary of epoch ``e`` a lease at its local time ``g`` will neither follow (hello,
  acknowledge entries of) nor grant to a primary of an epoch above ``e``, nor count itself
  toward such a primary's majority, until ``g + G`` on its own monotonic clock (``G`` =
  ``grant_s``). A node restarted with a non-empty log cannot know what it promised, so it
  starts with a promise to its stored epoch lasting ``G`` (``after_restart``).
- ``MajorityLease`` (primary side). Each frame the primary sends carries its monotonic send
  time ``s``; the replica echoes it in the acknowledgement that carries its grant. The
  grant is counted until ``s + usable_s`` on the primary's clock, where
  ``usable_s = G (1 - rho) / (1 + rho) - margin``. The primary counts itself only once its
  own promise (from when it was a replica) no longer blocks its epoch.
- ``ShardLease``: what the node checks. Valid while the majority lease is valid, or while
  the coordinator lease is valid *and* this epoch has been established (its majority lease
  was valid once). The coordinator lease stays as an alternative source for a primary cut
  off from its replicas but not from the coordinators.

The timing argument (``docs/replication.md`` has it in full). Real time, clocks within
``rho`` of it. The replica's grant is made at real time ``g >= s`` (the frame was sent
before it arrived) and its promise lasts until at least ``g + G / (1 + rho)``. The primary
stops counting it by ``s + usable_s / (1 - rho) = s + G / (1 + rho) - margin / (1 - rho)``,
strictly earlier. So while a primary counts a majority of grants, every member of that
majority is still bound by its promise and no newer primary can gather a majority of
followers or of grants; the intersection of two majorities is the fence.

Why a newly promoted primary needs an established epoch before it may use the coordinator
lease: the coordinator promotes after ``failover_timeout_s`` of silence, which covers the
old primary's *coordinator* lease but not its majority lease. A new primary whose majority
lease was valid once proves that a majority had been released by their promises, so the
old primary's majority lease had run out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from shardkv.cluster.errors import Unavailable
from shardkv.node.clock import NODE_CLOCK
from shardkv.node.replication.lease import PrimaryLease

__all__ = ["LeasePromise", "MajorityLease", "ShardLease", "usable_grant_s"]

Clock = Callable[[], float]
NEVER = float("-inf")


def usable_grant_s(grant_s: float, *, drift: float, margin_s: float) -> float:
    """How long after sending a frame the primary may count the grant it brings back."""
    usable = grant_s * (1 - drift) / (1 + drift) - margin_s
    if usable <= 0:
        raise ValueError(f"a grant of {grant_s}s leaves no usable lease with drift {drift} "
                         f"and margin {margin_s}s")
    return usable


class LeasePromise:
    """What this node promised by granting leases (see the module docstring)."""

    def __init__(self, grant_s: float, clock: Clock = NODE_CLOCK.monotonic) -> None:
        if grant_s <= 0:
            raise ValueError(f"grant duration must be positive, got {grant_s}")
        self.grant_s = grant_s
        self._clock = clock
        self.epoch = -1
        self._until = NEVER
        self.grants = 0
        self.refusals = 0

    def after_restart(self, stored_epoch: int) -> None:
        """A restarted node may have granted a lease in ``stored_epoch`` just before it
        stopped: keep that promise for a whole grant from now."""
        self.epoch = max(self.epoch, stored_epoch)
        self._until = max(self._until, self._clock() + self.grant_s)

    def grant(self, epoch: int) -> bool:
        """Grant the primary of ``epoch`` a lease from now; False (nothing promised) while
        a promise to another epoch still runs."""
        now = self._clock()
        if epoch != self.epoch and now < self._until:
            self.refusals += 1
            return False
        self.epoch = epoch
        self._until = now + self.grant_s
        self.grants += 1
        return True

    def release(self, epoch: int) -> None:
        """The primary of ``epoch`` gave its lease up (fenced): the promise is void."""
        if epoch == self.epoch:
            self._until = NEVER

    def blocking_s(self, epoch: int) -> float:
        """Seconds until this node may act for a primary of ``epoch`` (0: free now)."""
        if epoch <= self.epoch:
            return 0.0
        return max(0.0, self._until - self._clock())

    def remaining_s(self) -> float:
        return max(0.0, self._until - self._clock())

    async def wait_free_for(self, epoch: int, *, poll_s: float = 0.05) -> None:
        """Wait until the promise no longer blocks ``epoch`` (timers on the event loop's
        clock; re-checked on this clock, so a skewed clock only delays)."""
        # Polled, not an Event: nothing happens when a promise runs out, time just passes.
        left = self.blocking_s(epoch)
        while left > 0:
            await asyncio.sleep(min(left, poll_s) + 0.001)
            left = self.blocking_s(epoch)

    def to_dict(self) -> dict[str, float | int]:
        return {"epoch": self.epoch, "remaining_s": round(self.remaining_s(), 3)}


class MajorityLease:
    """The primary's count of its shard's grants in one epoch (module docstring)."""

    def __init__(self, usable_s: float, promise: LeasePromise,
                 clock: Clock = NODE_CLOCK.monotonic) -> None:
        self.usable_s = usable_s
        self.promise = promise
        self._clock = clock
        self.node_id = ""
        self.epoch = -1
        self.members: Collection[str] = ()
        self._grants: dict[str, float] = {}
        self._revoked = True
        self.established = False
        # ``expires_at`` as last computed: a read checks the clock against it and recomputes
        # only when it has passed (a read is one comparison; so is a grant). A cached value
        # can only be too early (a later grant, a self-count that became possible since),
        # never late.
        self._expiry = NEVER

    def begin(self, epoch: int, node_id: str, members: Collection[str]) -> None:
        """This node is primary of ``epoch`` now: forget every earlier grant."""
        self.epoch, self.node_id, self.members = epoch, node_id, members
        self._grants.clear()
        self._revoked = False
        self.established = False
        self._expiry = self.expires_at()

    def set_members(self, members: Collection[str]) -> None:
        self.members = members
        self._expiry = self.expires_at()

    def revoke(self) -> None:
        """Deposed or stepping down: nothing counts until the next ``begin``."""
        self._revoked = True
        self._grants.clear()
        self._expiry = NEVER

    def granted(self, node_id: str, sent_at: float) -> None:
        """``node_id`` granted a lease in answer to the frame sent at ``sent_at`` (our
        clock). A send time from the future is not ours: ignored."""
        if self._revoked or sent_at > self._clock():
            return
        until = sent_at + self.usable_s
        if until > self._grants.get(node_id, NEVER):
            self._grants[node_id] = until
            # ``_expiry`` is not recomputed here (every acknowledgement brings a grant): a
            # later grant can only move the expiry later, so the cached one stays safe (too
            # early at worst) and ``valid`` recomputes once the clock passes it.

    def expires_at(self) -> float:
        """When the majority lease runs out on this clock (-inf: not held)."""
        if self._revoked:
            return NEVER
        members = set(self.members) or {self.node_id}
        needed = len(members) // 2 + 1
        untils = [self._grants.get(m, NEVER) for m in members if m != self.node_id]
        if self.node_id in members and self.promise.blocking_s(self.epoch) == 0:
            untils.append(float("inf"))
        untils.sort(reverse=True)
        return untils[needed - 1] if len(untils) >= needed else NEVER

    @property
    def valid(self) -> bool:
        now = self._clock()
        if now >= self._expiry:
            self._expiry = self.expires_at()
            if now >= self._expiry:
                return False
        self.established = True
        return True

    def grantors(self) -> list[str]:
        now = self._clock()
        return sorted(m for m, until in self._grants.items() if until > now)


class ShardLease:
    """The lease the node checks: majority, or coordinator once established. Same surface
    as ``PrimaryLease`` (valid, state, remaining_s, renewed, revoke, check, wait_valid)."""

    def __init__(self, coordinator: PrimaryLease, majority: MajorityLease) -> None:
        self.coordinator = coordinator
        self.majority = majority
        self.expiries_seen = 0

    @property
    def duration_s(self) -> float:
        return self.coordinator.duration_s

    def now(self) -> float:
        return self.coordinator.now()

    def renewed(self, sent_at: float) -> None:
        self.coordinator.renewed(sent_at)

    def revoke(self) -> None:
        self.coordinator.revoke()
        self.majority.revoke()

    @property
    def source(self) -> str | None:
        """Where the lease comes from now: "majority", "coordinator" or None."""
        if self.majority.valid:
            return "majority"
        if self.coordinator.valid and self.majority.established:
            return "coordinator"
        return None

    @property
    def valid(self) -> bool:
        return self.source is not None

    @property
    def remaining_s(self) -> float:
        majority = max(0.0, self.majority.expires_at() - self.now())
        coordinator = self.coordinator.remaining_s if self.majority.established else 0.0
        return max(majority, coordinator)

    @property
    def state(self) -> str:
        if self.valid:
            return "valid"
        if self.majority.epoch < 0 and self.coordinator.state == "none":
            return "none"
        return "expired"

    def check(self) -> None:
        if not self.valid:
            self.expiries_seen += 1
            raise Unavailable("this primary holds no lease: neither a majority of its shard "
                              "nor the coordinator leader confirms it; not acknowledged",
                              lease_state=self.state)

    async def wait_valid(self, poll_s: float = 0.01) -> None:
        while not self.valid:  # noqa: ASYNC110 (a lease can also become valid by a grant
            await asyncio.sleep(poll_s)  # on another path; polling covers every source)

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "grantors": self.majority.grantors(),
                "established": self.majority.established,
                "coordinator": self.coordinator.state}
