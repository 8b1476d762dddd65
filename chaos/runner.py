"""``shardkv chaos run``: one scenario against a cluster it starts itself, start to report.

The order of a run, and why:

1. Start the cluster (the launcher, in ``DIR/cluster``) and wait until it is ready; in the
   cluster topology with network faults, put every process in its cgroup first.
2. Generate the schedule from the seed (saved as ``schedule.json``: a failing run replays).
3. Start the workload clients, then play the schedule: a health check (wait for readiness,
   bounded) before each fault and after each heal, recorded with how long recovery took.
   ``run_schedule`` heals every fault at the end, whatever happened.
4. Stop the workloads, wait for the cluster to *settle* (all members ready, the map stable),
   then do the final strong reads (patient: retried until a deadline) and collect digests.
5. Stop the cluster, check the history, write ``report.json``, ``summary.txt``,
   ``history.jsonl``, ``timeline.html``. The exit status is the report's.

Anything that prevents the run itself (the cluster does not start, a fault cannot be injected
on this machine) raises :class:`RunAborted` with the reason: a harness failure is never
reported as a verdict on the system.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.cluster_under_test import ClusterUnderTest
from shardkv.chaos.fault_catalog import NETWORK_FAULTS, FaultCatalog
from shardkv.chaos.history import History
from shardkv.chaos.nemesis.container_network import (
    ContainerNetwork,
    container_network_available,
)
from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.chaos.nemesis.loopback_partition import (
    LoopbackNetwork,
    loopback_partition_available,
)
from shardkv.chaos.nemesis.schedule import Schedule, generate_schedule, run_schedule
from shardkv.chaos.ownership_probe import check_run_ownership
from shardkv.chaos.report import Report, analyze, write_report
from shardkv.chaos.scenarios import Scenario
from shardkv.chaos.workloads.kinds import Context
from shardkv.chaos.workloads.mix import final_reads, run_workloads
from shardkv.chaos.workloads.recorder import Recorder, patient_client, workload_client
from shardkv.chaos.workloads.watch_workload import WatchWorkload
from shardkv.cluster.launcher import LaunchError

log = logging.getLogger(__name__)

TEST_ADMIN_ENV = "SHARDKV_TEST_ADMIN"
CONTROLS_ENV = "SHARDKV_NEGATIVE_CONTROLS"  # node/testing/negative_controls.py
_RUN_NUMBERS = itertools.count(1)  # runs of one process differ even with the same seed


class RunAborted(RuntimeError):
    """The run could not be carried out (not a verdict on the system under test)."""


@dataclass
class RunOptions:
    scenario: Scenario
    seed: int
    out: Path
    duration_s: float | None = None  # None: the scenario's default
    op_timeout_s: float = 2.0
    health_timeout_s: float = 30.0
    settle_timeout_s: float = 60.0
    slack_ms: float = 0.0
    budget_s: float = 60.0
    schedule_file: Path | None = None  # replay a saved schedule instead of generating one
    docker_image: str | None = None  # run the cluster in containers of this image

    @property
    def duration(self) -> float:
        return self.duration_s if self.duration_s is not None else self.scenario.duration_s


@dataclass
class RunRecord:
    """What the runner observed besides the operations: for report.json's meta."""

    health: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def _network_for(cut: ClusterUnderTest, scenario: Scenario,
                       run_id: str) -> LoopbackNetwork | ContainerNetwork | None:
    needed = {f.name for f in scenario.faults} & NETWORK_FAULTS
    if cut.standalone or not needed:
        return None
    if cut.container_cluster is not None:
        ok, why = await container_network_available()
        if not ok:
            raise RunAborted(f"faults {sorted(needed)} on containers: {why}")
        plan = cut.container_cluster.plan
        return ContainerNetwork({s.id: plan.ip_of(s.id) for s in plan.processes}, cut.pid_of)
    ok, why = await loopback_partition_available()
    if not ok:
        raise RunAborted(f"faults {sorted(needed)} need the loopback partition: {why}")
    ports: dict[str, list[int]] = {}
    for spec in cut.plan.processes:
        ports[spec.id] = [spec.port] + ([spec.raft_port] if spec.raft_port else [])
    network = LoopbackNetwork(run_id, ports)
    await network.create()
    return network


def _schedule(opts: RunOptions, cut: ClusterUnderTest) -> Schedule:
    if opts.schedule_file is not None:
        return Schedule.load(opts.schedule_file)
    s = opts.scenario
    return generate_schedule(opts.seed, opts.duration, s.faults, cut.node_ids(),
                             quiet_s=s.quiet_s, fault_s=s.fault_s, settle_s=s.settle_s)


async def run_scenario(opts: RunOptions) -> Report:
    """Run ``opts.scenario`` and write its report into ``opts.out``; returns the report."""
    scenario = opts.scenario
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    history = History()
    record = RunRecord()
    run_id = f"{opts.seed % 100000}x{os.getpid() % 997}r{next(_RUN_NUMBERS)}"
    try:
        cut = ClusterUnderTest(out / "cluster", scenario.shape,
                               docker_image=opts.docker_image, run_id=run_id)
    except (LaunchError, ValueError) as exc:
        raise RunAborted(f"the cluster cannot be set up: {exc}") from exc
    network: LoopbackNetwork | ContainerNetwork | None = None
    digests: dict[str, dict[str, Any]] | None = None
    final_map: dict[str, Any] | None = None  # for the ownership check, after the stop
    recorder = Recorder(history)
    extra: list[CheckResult] = []  # checks beyond the history's: the watch, ownership
    started = time.monotonic()
    meta: dict[str, Any] = {"scenario": scenario.name, "seed": opts.seed,
                            "duration_s": opts.duration, "topology": scenario.shape.topology,
                            "runtime": "docker" if cut.in_containers else "processes"}
    # Node failpoints are armed, and clocks skewed, over admin endpoints that only exist in a
    # node started with SHARDKV_TEST_ADMIN=1; the launcher passes this process's environment
    # on (to containers too).
    saved_env = {name: os.environ.get(name) for name in (TEST_ADMIN_ENV, CONTROLS_ENV)}
    control = scenario.negative_control
    if control is not None or any(f.name.startswith(("failpoint", "clock", "switchover"))
                                  for f in scenario.faults):
        os.environ[TEST_ADMIN_ENV] = "1"
    if control is not None:  # a deliberate node bug, armed on every node of this run only
        os.environ[CONTROLS_ENV] = control.switch
        meta["negative_control"] = {"switch": control.switch,
                                    "must_fail": list(control.must_fail)}
    try:
        network = await _network_for(cut, scenario, run_id)
        try:
            await cut.start(on_spawn=network.place if network is not None else None)
        except Exception as exc:
            raise RunAborted(f"the cluster did not start: {exc}") from exc
        catalog = FaultCatalog(cut, seed=opts.seed, network=network)
        try:
            nemeses = catalog.build([f.name for f in scenario.faults])
        except NemesisError as exc:
            raise RunAborted(str(exc)) from exc
        schedule = _schedule(opts, cut)
        schedule.dump(out / "schedule.json")
        meta["faults_scheduled"] = len(schedule.faults)

        async def health_check() -> None:
            h = await cut.wait_ready(opts.health_timeout_s)
            record.health.append({"at_s": round(time.monotonic() - started, 3), "ok": h.ok,
                                  "reason": h.reason, "waited_s": h.elapsed_s})
            if not h.ok:
                log.warning("cluster not healthy after %.1f s: %s", h.elapsed_s, h.reason)

        endpoints, direct = cut.client_endpoints()
        names = {spec.url: spec.id for spec in cut.plan.nodes}
        if direct:  # the client sees the proxy's address, not the node's
            names[endpoints[0]] = cut.plan.nodes[0].id
        ctx = Context(recorder, timeout=opts.op_timeout_s, names=names)
        workloads = scenario.mix.build(ctx)
        stop = asyncio.Event()
        meta["client_retries"] = scenario.mix.retries
        async with workload_client(endpoints, direct=direct, timeout=opts.op_timeout_s,
                                   retries=scenario.mix.retries) as client:
            driver = asyncio.create_task(
                run_workloads(scenario.mix, workloads, client, recorder, stop, seed=opts.seed))
            faults_from = time.monotonic()  # the schedule's time 0
            try:
                await run_schedule(schedule, nemeses, history, health_check=health_check)
                remaining = opts.duration - (time.monotonic() - faults_from)
                if remaining > 0 and not driver.done():
                    await asyncio.wait([driver], timeout=remaining)
            finally:
                stop.set()
                await driver
            # The watch workload's watch runs on this client: let it catch up and check it
            # before the client closes (issue 15).
            extra += [await w.finish() for w in workloads.values()
                      if isinstance(w, WatchWorkload)]
        settled = await cut.wait_settled(opts.settle_timeout_s)
        meta["settled"] = {"ok": settled.ok, "reason": settled.reason,
                           "waited_s": settled.elapsed_s}
        async with patient_client(endpoints, direct=direct) as reader:
            unread = await final_reads(workloads, reader, recorder)
        if unread:
            meta["final_reads_failed"] = unread
        digests, why = await cut.digests()
        if digests is None:
            record.notes.append(f"convergence not checked: {why}")
        else:  # kept for `shardkv chaos check --digests`
            (out / "digests.json").write_text(json.dumps(digests, indent=2) + "\n")
        final_map = None if cut.standalone else await cut.cluster_map()
        wal = nemeses.get("wal-damage")
        if wal is not None:
            meta["wal_damage"] = getattr(getattr(wal, "inner", wal), "outcomes", [])
    finally:
        for name, saved in saved_env.items():
            if saved is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved
        if network is not None:
            await network.destroy()
        cluster = cut.describe()
        await cut.stop()
        (out / "run.json").write_text(json.dumps(
            {"cluster": cluster, "health_checks": record.health, "meta": meta},
            indent=2, default=str) + "\n")
    meta["operations_by_outcome"] = dict(recorder.counts)
    bad = [h for h in record.health if not h["ok"]]
    meta["health_checks"] = (
        f"{len(record.health)} checks, {len(bad)} not ready in time, longest wait "
        f"{max((h['waited_s'] for h in record.health), default=0)} s (run.json)")
    if cluster.get("restarts"):
        meta["restarts"] = cluster["restarts"]
    if record.notes:
        meta["notes"] = record.notes
    if final_map is not None and not cut.in_containers:
        extra.append(await check_run_ownership(
            final_map, cut.data_dir_of, scenario.shape.engine, history))  # issue 12
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    report = analyze(history, digests=digests, slack_ms=opts.slack_ms,
                     time_budget_s=opts.budget_s, meta=meta, extra_checks=extra)
    summary = write_report(report, history, out)
    (out / "scenario.json").write_text(json.dumps(scenario.to_json(), indent=2) + "\n")
    log.info("chaos run finished: %s", summary.splitlines()[0])
    return report
