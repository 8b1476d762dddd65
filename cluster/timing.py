"""The timing contract between nodes and coordinators, defined and validated in one place.

A primary's lease is only safe if it runs out before the coordinator leader may promote
another member: the coordinator waits ``failover_timeout_s`` of silence, and the node derives
its lease from the same value (``lease_for``; the argument is in ``docs/replication.md`` and
``node/replication/lease.py``). Both processes therefore read these settings through
``TIMING_SETTINGS`` (same file keys, same environment variables) and build a
``TimingContract``, whose constructor refuses a combination that leaves no positive lease.

Settings (file key / environment variable, default):

- ``failover_timeout_s`` / ``SHARDKV_FAILOVER_TIMEOUT_S`` (3): silence before a primary is
  declared dead; between 0.2 and 600 s.
- ``lease_margin_s`` / ``SHARDKV_LEASE_MARGIN_S`` (0.3): time kept between the lease's end and
  the earliest promotion, for an acknowledgement in flight and the check's own delay.
- ``clock_drift`` / ``SHARDKV_CLOCK_DRIFT`` (0.05): the bound on any clock's rate error.
- ``write_timeout_s`` / ``SHARDKV_WRITE_TIMEOUT_S`` (5): how long a node lets a write wait
  for its write concern before answering ``TIMEOUT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shardkv.cluster.settings import ConfigError, Setting, number

DEFAULT_FAILOVER_TIMEOUT_S = 3.0
DEFAULT_LEASE_MARGIN_S = 0.3
DEFAULT_CLOCK_DRIFT = 0.05
DEFAULT_WRITE_TIMEOUT_S = 5.0

TIMING_SETTINGS = (
    Setting("failover_timeout_s", "SHARDKV_FAILOVER_TIMEOUT_S"),
    Setting("lease_margin_s", "SHARDKV_LEASE_MARGIN_S"),
    Setting("clock_drift", "SHARDKV_CLOCK_DRIFT"),
    Setting("write_timeout_s", "SHARDKV_WRITE_TIMEOUT_S"),
)


def lease_for(
    failover_timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S,
    *,
    drift: float = DEFAULT_CLOCK_DRIFT,
    margin_s: float = DEFAULT_LEASE_MARGIN_S,
) -> float:
    """The longest safe lease: the largest ``L`` with ``L(1 + drift) + margin <=
    T(1 - drift)``. Raises ``ConfigError`` (a ``ValueError``) when no positive lease fits."""
    if not 0 <= drift < 1:
        raise ConfigError(f"clock_drift must be in [0, 1), got {drift}")
    lease = (failover_timeout_s * (1 - drift) - margin_s) / (1 + drift)
    if lease <= 0:
        raise ConfigError(
            f"failover_timeout_s {failover_timeout_s}s is too short for a lease with clock "
            f"drift {drift} and margin {margin_s}s (it must exceed "
            f"{margin_s / (1 - drift):.3f}s)")
    return lease


@dataclass(frozen=True, slots=True)
class TimingContract:
    """Validated on construction; ``lease_s`` is derived, never configured."""

    failover_timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S
    lease_margin_s: float = DEFAULT_LEASE_MARGIN_S
    clock_drift: float = DEFAULT_CLOCK_DRIFT
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S

    def __post_init__(self) -> None:
        if not 0.2 <= self.failover_timeout_s <= 600:
            raise ConfigError("failover_timeout_s must be between 0.2 and 600 seconds, got "
                              f"{self.failover_timeout_s}")
        if not 0 < self.write_timeout_s <= 3600:
            raise ConfigError("write_timeout_s must be in (0, 3600] seconds, got "
                              f"{self.write_timeout_s}")
        if self.lease_margin_s < 0:
            raise ConfigError(f"lease_margin_s must be >= 0, got {self.lease_margin_s}")
        lease_for(self.failover_timeout_s, drift=self.clock_drift, margin_s=self.lease_margin_s)

    @property
    def lease_s(self) -> float:
        return lease_for(self.failover_timeout_s, drift=self.clock_drift,
                         margin_s=self.lease_margin_s)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> TimingContract:
        """From merged raw settings (``settings.merge_sources`` over ``TIMING_SETTINGS``)."""
        defaults = cls()
        return cls(
            failover_timeout_s=number("failover_timeout_s", values.get(
                "failover_timeout_s", defaults.failover_timeout_s), minimum=0.0),
            lease_margin_s=number("lease_margin_s", values.get(
                "lease_margin_s", defaults.lease_margin_s), minimum=0.0),
            clock_drift=number("clock_drift", values.get(
                "clock_drift", defaults.clock_drift), minimum=0.0, maximum=0.5),
            write_timeout_s=number("write_timeout_s", values.get(
                "write_timeout_s", defaults.write_timeout_s), minimum=0.0),
        )
