"""The primary's lease: the time during which no other node can have been promoted.

The coordinator leader promotes a replica only after it has heard nothing from the primary
for ``failover_timeout_s`` (3 s by default). A primary that is alive but cut off from the
coordinator (a partition, a long GC or SIGSTOP pause) must stop acknowledging writes *before*
that can happen, or two primaries would acknowledge writes at once and one side's would be
lost. So a primary acknowledges a write only while it holds a lease, renewed by each
heartbeat the coordinator leader answers, and running out ``duration_s`` after that
heartbeat was *sent* (measured on this node's monotonic clock, ``NODE_CLOCK.monotonic``,
which the coordinator link also stamps heartbeats with).

The timing argument (also in ``docs/replication.md``). Let ``s`` be the moment a heartbeat
is sent, ``r >= s`` the moment the leader receives it, ``L`` the lease and ``T`` the failover
timeout, each clock's rate within ``rho`` of real time. The node stops acknowledging by
``s + L(1 + rho)`` in real time at the latest; the leader promotes no earlier than
``r + T(1 - rho) >= s + T(1 - rho)``. So no overlap is possible when
``L(1 + rho) + margin <= T(1 - rho)``, where the margin covers the acknowledgement already in
flight when the lease runs out (the check happens just before the answer is sent) and the
scheduling delay of the check itself. ``lease_for(T)`` picks the largest such ``L``; with
T = 3 s, rho = 5 % and a 300 ms margin that is about 2.43 s.

Nothing here relies on the two clocks agreeing on the time of day, only on their rates; and
the lease is the second fence, not the only one: replicas that follow a newer epoch refuse
the old primary's stream, so without a majority it could not commit a write anyway.

``lease_for`` and the settings it depends on are the timing contract in ``cluster/timing.py``,
shared with the coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shardkv.cluster.errors import Unavailable
from shardkv.cluster.timing import lease_for
from shardkv.node.clock import NODE_CLOCK

__all__ = ["PrimaryLease", "lease_for"]


class PrimaryLease:
    """See the module docstring. ``renewed(sent_at)`` after each answered heartbeat;
    ``valid`` before acknowledging a write."""

    def __init__(self, duration_s: float,
                 clock: Callable[[], float] = NODE_CLOCK.monotonic) -> None:
        if duration_s <= 0:
            raise ValueError(f"lease duration must be positive, got {duration_s}")
        self.duration_s = duration_s
        self._clock = clock
        self._expires_at = float("-inf")
        self._unbounded = False
        self._changed = asyncio.Event()
        self.renewals = 0
        self.expiries_seen = 0

    @classmethod
    def unbounded(cls) -> PrimaryLease:
        """A lease that never runs out: a standalone node has no coordinator to fail it over,
        so there is nobody to fence against."""
        lease = cls(1.0)
        lease._unbounded = True
        return lease

    def now(self) -> float:
        return self._clock()

    def renewed(self, sent_at: float) -> None:
        """A heartbeat sent at ``sent_at`` (this clock) was answered by the leader."""
        expires = sent_at + self.duration_s
        if expires > self._expires_at:
            self._expires_at = expires
            self.renewals += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def revoke(self) -> None:
        """Give the lease up at once (deposed, or stepping down for a switchover)."""
        self._expires_at = float("-inf")
        self._unbounded = False

    @property
    def valid(self) -> bool:
        return self._unbounded or self._clock() < self._expires_at

    @property
    def remaining_s(self) -> float:
        if self._unbounded:
            return float("inf")
        return max(0.0, self._expires_at - self._clock())

    @property
    def state(self) -> str:
        if self._unbounded:
            return "unbounded"
        if self._expires_at == float("-inf"):
            return "none"
        return "valid" if self.valid else "expired"

    def check(self) -> None:
        """Raise UNAVAILABLE unless the lease is held."""
        if not self.valid:
            self.expiries_seen += 1
            raise Unavailable("this primary's lease has expired (it cannot reach the "
                              "coordinator); the write was not acknowledged",
                              lease_state=self.state)

    async def wait_valid(self) -> None:
        """Wait until the lease is held (renewed, or never expired)."""
        while not self.valid:
            await self._changed.wait()  # renewed() sets it, then replaces it
