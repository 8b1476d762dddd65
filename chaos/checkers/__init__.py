"""Checkers that read a history (and final observations) and return a :class:`CheckResult`.

Linearizability lives in :mod:`shardkv.chaos.linearizability`; these are the other
properties: no lost acknowledged write, bounded staleness of eventual reads, exact counters,
replica convergence, and availability figures.
"""

from shardkv.chaos.checkers.result import CheckResult

__all__ = ["CheckResult"]
