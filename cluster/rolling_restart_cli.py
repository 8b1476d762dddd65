"""``shardkv restart --rolling [--dir DIR] [--json]``: restart every process of a local
cluster one at a time while it serves (order and waiting: ``cluster/rolling_restart.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shardkv.cluster.launcher import LaunchError
from shardkv.cluster.process_control import LauncherProcesses
from shardkv.cluster.rolling_restart import MEMBER_READY_TIMEOUT_S, RollingRestart


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rolling", action="store_true", required=True,
                        help="one process at a time: replicas, then each shard's primary "
                        "after a handoff, then coordinators (leader last)")
    parser.add_argument("--dir", default=".shardkv", help="the cluster's directory "
                        "(as given to `shardkv up --detach`)")
    parser.add_argument("--timeout", type=float, default=MEMBER_READY_TIMEOUT_S,
                        help="seconds each member may take to be ready (caught up) again")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else \
        (lambda line: print(line, flush=True))
    try:
        control = LauncherProcesses(directory)
        report = RollingRestart(control, say=say, ready_timeout_s=args.timeout).run()
    except LaunchError as exc:
        print(f"shardkv restart: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict()))
    return 0


COMMANDS = [
    ("restart", "restart a local cluster's processes one at a time (--rolling)",
     add_arguments, run),
]
