"""``shardkv up`` and ``shardkv down``: a whole cluster on this machine, one command each.

``up`` runs in the foreground by default: it starts the cluster, prints the endpoints,
restarts a process that dies (``--supervise``, the default in the foreground; ``--no-supervise``
to watch crashes instead), and stops everything on Ctrl-C (or SIGTERM). ``--detach`` runs that
same launcher as a background process (its own session, its output in
``DIR/logs/launcher.log``) and returns once the cluster is ready; detached, supervision is off
unless asked for, so a process you kill stays dead (as the failover demo needs). Either way the
launcher serves ``shardkv node|coordinator start|stop|restart ID``.

``down`` asks the launcher to stop (it stops its processes in order), makes sure no process
named in ``cluster.json`` survives, and returns only once they have all exited and their ports
can be bound again: ``up`` right after ``down`` always works.

A failed ``up`` says why once: the launcher writes this run's reason to ``DIR/launcher.failed``
and the detached parent prints that and the log path, not an old log's tail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from shardkv.cluster.launcher import READY_TIMEOUT_S, ClusterPlan, LaunchError, LocalCluster
from shardkv.cluster.launcher_control import launcher_pid, serve_requests
from shardkv.cluster.local_processes import (
    is_shardkv_process,
    log_tail,
    pid_alive,
    stop_described,
)

DEFAULT_DIR = ".shardkv"
READY_MARK = "launcher.ready"
FAILED_MARK = "launcher.failed"


class _Stop(Exception):
    """SIGTERM arrived: stop the cluster as for Ctrl-C."""


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=DEFAULT_DIR,
                        help=f"where data, logs and cluster.json go (default {DEFAULT_DIR})")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=3,
                        help="members per shard, the primary counted (default 3)")
    parser.add_argument("--coordinators", type=int, default=3, help="1, 3 or 5 (default 3)")
    parser.add_argument("--engine", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--fsync", choices=("always", "interval", "never"), default="always")
    parser.add_argument("--detach", action="store_true",
                        help="return once ready; stop later with `shardkv down`")
    parser.add_argument("--supervise", action=argparse.BooleanOptionalAction, default=None,
                        help="restart a node or coordinator that dies (default: on in the "
                        "foreground, off with --detach)")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT_S,
                        help=f"seconds to wait for readiness (default {READY_TIMEOUT_S:.0f})")
    parser.add_argument("--json", action="store_true", help="print cluster.json once ready")
    parser.add_argument("--launcher-child", action="store_true", help=argparse.SUPPRESS)


def add_down_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=DEFAULT_DIR,
                        help=f"the cluster directory (default {DEFAULT_DIR})")
    parser.add_argument("--json", action="store_true")


def _running_pids(directory: Path) -> list[int]:
    pids = [pid] if (pid := launcher_pid(directory)) is not None else []
    with contextlib.suppress(OSError, ValueError):
        described = json.loads((directory / "cluster.json").read_text())
        for entry in described.get("coordinators", []) + described.get("nodes", []):
            if isinstance(entry.get("pid"), int):
                pids.append(entry["pid"])
    return [p for p in pids if pid_alive(p) and is_shardkv_process(p)]


def _plan_for(directory: Path, args: argparse.Namespace) -> ClusterPlan:
    """Reuse the previous plan when the shape is unchanged (data keeps its addresses)."""
    saved = directory / "launcher.json"
    if saved.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
            plan = ClusterPlan.load(saved)
            if plan.same_shape(args.shards, args.replicas, args.coordinators):
                plan.engine, plan.fsync = args.engine, args.fsync
                return plan
    return ClusterPlan.new(directory, shards=args.shards, replicas=args.replicas,
                           coordinators=args.coordinators, engine=args.engine,
                           fsync=args.fsync)


def render_endpoints(cluster: LocalCluster) -> str:
    plan = cluster.plan
    lines = [f"shardkv cluster ready: {plan.shards} shards x {plan.replicas} members, "
             f"{len(plan.coordinators)} coordinators, data in {cluster.directory}",
             "coordinators:"]
    for c in plan.coordinators:
        lines.append(f"  {c.id:<4} {c.url:<24} metrics {c.url}/metrics")
    lines.append("nodes:")
    for n in plan.nodes:
        lines.append(f"  {n.id:<4} {n.shard:<4} {n.url:<24} metrics {n.url}/metrics")
    dashboard = f"dashboard: {plan.coordinators[0].url}/ui (any coordinator serves it)"
    if cluster.credentials is not None:
        dashboard += f"; log in with the token in {cluster.credentials.token_file}"
    lines.append(dashboard)
    lines.append(f"export SHARDKV_COORDINATORS={','.join(plan.coordinator_urls())}")
    return "\n".join(lines) + "\n"


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def run_foreground(directory: Path, args: argparse.Namespace) -> int:
    cluster = LocalCluster(directory, _plan_for(directory, args))
    pid_file = directory / "launcher.pid"
    ready_mark = directory / READY_MARK
    failed_mark = directory / FAILED_MARK
    supervise = args.supervise if args.supervise is not None else not args.launcher_child
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ready_mark.unlink(missing_ok=True)
        failed_mark.unlink(missing_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
        cluster.secure()  # secure by default: a credential in DIR/cluster.token, mode 0600
        cluster.start()
        cluster.wait_ready(args.timeout)
        if args.json:
            print(json.dumps(cluster.describe()), flush=True)
        else:
            print(render_endpoints(cluster), end="", flush=True)
            print("Ctrl-C stops the cluster." if not args.launcher_child
                  else f"`shardkv down --dir {directory}` stops the cluster.", flush=True)
            print("supervising: a process that dies is restarted (--no-supervise to not)"
                  if supervise else "not supervising: a process that dies stays down "
                  "(`shardkv node start ID` brings it back)", flush=True)
        ready_mark.write_text("ready\n")
        reported: set[str] = set()
        while True:
            time.sleep(0.2)
            for line in serve_requests(cluster):
                print(line, flush=True)
            reported &= set(cluster.dead())
            if supervise:
                for process_id in cluster.restart_dead():
                    print(f"restarted {process_id} (restart #{cluster.restarts[process_id]})",
                          flush=True)
            else:
                for process_id in sorted(set(cluster.dead()) - reported):
                    reported.add(process_id)
                    spec = cluster.spec(process_id)
                    print(f"{spec.kind} {process_id} exited (not restarted: `shardkv "
                          f"{spec.kind} start {process_id}`, or --supervise); log: "
                          f"{cluster.log_path(spec)}", flush=True)
    except LaunchError as exc:
        print(f"shardkv up: {exc}", file=sys.stderr, flush=True)
        failed_mark.write_text(f"{exc}\n")
        return 1
    except (KeyboardInterrupt, _Stop):
        print("stopping the cluster...", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cluster.stop()
        for path in (pid_file, ready_mark):
            path.unlink(missing_ok=True)


def run_detached(directory: Path, args: argparse.Namespace) -> int:
    """Start the foreground launcher in the background and wait for its ready mark."""
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for mark in (READY_MARK, FAILED_MARK):
        (directory / mark).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "shardkv.cluster.cli", "up", "--dir", str(directory),
            "--shards", str(args.shards), "--replicas", str(args.replicas),
            "--coordinators", str(args.coordinators), "--engine", args.engine,
            "--fsync", args.fsync, "--timeout", str(args.timeout), "--launcher-child"]
    if args.supervise:
        argv.append("--supervise")
    launcher_log = logs / "launcher.log"
    since = launcher_log.stat().st_size if launcher_log.exists() else 0
    with launcher_log.open("ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
    deadline = time.monotonic() + args.timeout + 15.0
    while time.monotonic() < deadline:
        if (directory / READY_MARK).is_file():
            cluster = LocalCluster(directory, ClusterPlan.load(directory / "launcher.json"))
            described = json.loads((directory / "cluster.json").read_text())
            if args.json:
                print(json.dumps(described))
            else:
                print(render_endpoints(cluster), end="")
                print(f"launcher pid {child.pid}; `shardkv down --dir {directory}` stops it")
            return 0
        if child.poll() is not None:
            failed = directory / FAILED_MARK
            reason = (failed.read_text().strip() if failed.is_file()
                      else log_tail(launcher_log, 15, since=since))
            print(f"shardkv up: the cluster did not start: {reason}\n"
                  f"launcher log: {launcher_log}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print("shardkv up: timed out waiting for the cluster; stopping it", file=sys.stderr)
    stop_described(directory)
    return 1


def run_up(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    running = _running_pids(directory)
    if running and not args.launcher_child:
        print(f"shardkv up: a cluster is already running in {directory} (pids "
              f"{', '.join(map(str, running))}); `shardkv down --dir {args.dir}` stops it",
              file=sys.stderr)
        return 1
    if args.shards < 1 or args.replicas < 1 or args.coordinators < 1:
        print("shardkv up: --shards, --replicas and --coordinators must be >= 1",
              file=sys.stderr)
        return 2
    if args.detach:
        return run_detached(directory, args)
    return run_foreground(directory, args)


def run_down(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    signalled = stop_described(directory)
    if args.json:
        print(json.dumps({"dir": str(directory), "stopped_pids": signalled}))
    elif signalled:
        print(f"stopped the cluster in {directory} ({len(signalled)} processes; all exited, "
              f"ports released)")
    else:
        print(f"nothing running in {directory}")
    return 0


COMMANDS = [
    ("up", "start a local cluster (coordinators and nodes as processes)", add_up_arguments,
     run_up),
    ("down", "stop the local cluster started by `shardkv up --detach`", add_down_arguments,
     run_down),
]
