"""Workloads: client processes that drive a cluster and record every operation.

Each workload is a coroutine factory over a :class:`~shardkv.chaos.workloads.recorder.Recorder`
(which turns client calls into history events and decides ok/fail/info) and a key space of its
own, so the checkers can pick a model per key: registers (linearizability), unique appends
(lost writes), eventual reads (staleness) and counters (lost or doubled increments).
"""

from shardkv.chaos.workloads.mix import WORKLOADS, WorkloadMix, run_workloads

__all__ = ["WORKLOADS", "WorkloadMix", "run_workloads"]
