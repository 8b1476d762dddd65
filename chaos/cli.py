"""``shardkv chaos ...``: list scenarios, run one, re-check a recorded history.

``shardkv chaos list`` prints the pinned scenarios. ``shardkv chaos run --scenario NAME
--duration 60s --seed N --out DIR`` starts a cluster (local processes; containers with
``--docker``), runs the scenario and writes its report (see ``chaos.runner``).
``shardkv chaos soak --hours H --out DIR`` cycles every scenario with fresh seeds and writes
one summary table (``chaos.soak``).
``shardkv chaos check DIR/history.jsonl --out DIR2`` runs every checker again over a saved
history (after a checker fix, or with another staleness slack).
The exit status is the report's: 0 ok, 1 anomaly, 2 unknown (or the run could not be done).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shutil
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from shardkv.chaos.container_cluster import DEFAULT_IMAGE, docker_available
from shardkv.chaos.history import load_history
from shardkv.chaos.report import analyze, write_report
from shardkv.cluster import event_loop

T = TypeVar("T")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1m30s`` -> seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 90s, 2m, 1m30s)")
    minutes, seconds = match.groups()
    total = float(minutes or 0) * 60 + float(seconds or 0)
    if total <= 0:
        raise argparse.ArgumentTypeError("the duration must be > 0")
    return total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="chaos_command", metavar="ACTION")
    sub.required = True
    listing = sub.add_parser("list", help="list the pinned scenarios")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(_chaos_run=run_list)
    run_p = sub.add_parser("run", help="run a scenario against a cluster it starts itself")
    run_p.add_argument("--scenario", required=True, help="a name from `shardkv chaos list`")
    run_p.add_argument("--duration", type=parse_duration,
                       help="how long to inject faults (e.g. 60s, 2m; default per scenario)")
    run_p.add_argument("--seed", type=int, default=1, help="seed of the fault schedule and "
                       "the workloads: the same seed replays the same run (default 1)")
    run_p.add_argument("--out", type=Path, required=True,
                       help="directory for the report, history, schedule and cluster data")
    run_p.add_argument("--topology", choices=("cluster", "standalone"),
                       help="override the scenario's topology (standalone: one node)")
    run_p.add_argument("--schedule", type=Path, help="replay this schedule.json instead of "
                       "generating one from the seed")
    run_p.add_argument("--docker", action="store_true",
                       help="run the cluster in containers of --image on a Docker network "
                            "of its own (root; build the image with scripts/build-image.sh)")
    run_p.add_argument("--image", default=DEFAULT_IMAGE,
                       help=f"the shardkv image for --docker (default {DEFAULT_IMAGE}, "
                            "or $SHARDKV_IMAGE)")
    run_p.add_argument("--op-timeout", type=float, default=2.0,
                       help="per-operation client timeout, seconds (default 2)")
    run_p.add_argument("--slack-ms", type=float, default=0.0,
                       help="tolerance added to every staleness bound (default 0)")
    run_p.add_argument("--budget-s", type=float, default=60.0,
                       help="time budget of the linearizability search (default 60)")
    run_p.add_argument("--keep-data", action="store_true",
                       help="keep DIR/cluster (data dirs and logs) even when the run is ok")
    run_p.set_defaults(_chaos_run=run_run)
    soak_p = sub.add_parser("soak", help="cycle every scenario with fresh seeds for hours; "
                            "keep failing runs, write a summary table")
    soak_p.add_argument("--hours", type=float, required=True, help="how long to soak")
    soak_p.add_argument("--scenarios", nargs="+", metavar="NAME",
                        help="scenarios to cycle (default: every one but the negative "
                             "controls)")
    soak_p.add_argument("--seed", type=int, help="seed of the soak (scenario order and every "
                        "run's seed; default: from the clock, printed)")
    soak_p.add_argument("--run-duration", type=parse_duration, default=60.0,
                        help="faults per run (default 60s)")
    soak_p.add_argument("--out", type=Path, required=True,
                        help="directory for soak.md, soak.html, soak.json and failing runs")
    soak_p.set_defaults(_chaos_run=run_soak)
    check = sub.add_parser("check", help="check a recorded history.jsonl and write a report")
    check.add_argument("history", type=Path, help="a history.jsonl written by a chaos run")
    check.add_argument("--out", type=Path, help="write report.json, summary.txt and "
                       "timeline.html here (default: beside the history)")
    check.add_argument("--digests", type=Path,
                       help="JSON {shard: {member: digest}} for the convergence check")
    check.add_argument("--slack-ms", type=float, default=0.0,
                       help="tolerance added to every staleness bound (default 0)")
    check.add_argument("--budget-s", type=float, default=60.0,
                       help="time budget of the linearizability search (default 60)")
    check.set_defaults(_chaos_run=run_check)


def run_check(args: Any) -> int:
    try:
        history = load_history(args.history)
        digests = json.loads(args.digests.read_text()) if args.digests else None
    except (OSError, ValueError) as exc:
        print(f"shardkv chaos check: {exc}", file=sys.stderr)
        return 2
    report = analyze(history, digests=digests, slack_ms=args.slack_ms,
                     time_budget_s=args.budget_s, meta={"history": str(args.history)})
    out = args.out or args.history.parent
    if out.resolve() == args.history.parent.resolve() and args.history.name == "history.jsonl":
        # Do not rewrite the history being read: write the rest of the report only.
        print(write_report(report, history, out, include_history=False))
    else:
        print(write_report(report, history, out))
    return report.exit_status


def run_soak(args: Any) -> int:
    import time

    from shardkv.chaos.soak import SoakOptions, default_scenarios, soak

    if args.hours <= 0:
        print("shardkv chaos soak: --hours must be > 0", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(time.time())
    opts = SoakOptions(args.hours, args.out, args.scenarios or default_scenarios(), seed,
                       run_s=args.run_duration)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(f"shardkv chaos soak: seed {seed} (replay the whole soak with --seed {seed})")
    try:
        rows = event_loop.run(_interruptible(soak(opts)))
    except ValueError as exc:
        print(f"shardkv chaos soak: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print(f"shardkv chaos soak: interrupted; table so far in {args.out / 'soak.md'}",
              file=sys.stderr)
        return 130
    print((args.out / "soak.md").read_text(), end="")
    return 0 if all(r.verdict in ("ok", "aborted") for r in rows) else 1


def run_list(args: Any) -> int:
    from shardkv.chaos.scenarios import SCENARIOS, describe_scenarios

    if args.json:
        print(json.dumps([s.to_json() for s in SCENARIOS.values()], indent=2))
    else:
        print(describe_scenarios())
    return 0


async def _interruptible(run: Coroutine[Any, Any, T]) -> T:
    """Run ``run`` so that SIGTERM or SIGINT cancels it: the runner's ``finally`` blocks then
    heal every fault and stop the cluster (without this a SIGTERM would leave iptables rules,
    cgroups, processes or containers behind)."""
    task = asyncio.ensure_future(run)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_run(args: Any) -> int:
    from shardkv.chaos.runner import RunAborted, RunOptions, run_scenario
    from shardkv.chaos.scenarios import get_scenario

    if args.docker:
        ok, why = docker_available(args.image)
        if not ok:
            print(f"shardkv chaos run --docker: {why}; run without --docker for local "
                  "processes", file=sys.stderr)
            return 2
    try:
        scenario = get_scenario(args.scenario)
        if args.topology:
            scenario = scenario.with_topology(args.topology)
    except ValueError as exc:
        print(f"shardkv chaos run: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    opts = RunOptions(scenario, args.seed, args.out, duration_s=args.duration,
                      op_timeout_s=args.op_timeout, slack_ms=args.slack_ms,
                      budget_s=args.budget_s, schedule_file=args.schedule,
                      docker_image=args.image if args.docker else None)
    try:
        report = event_loop.run(_interruptible(run_scenario(opts)))
    except RunAborted as exc:
        print(f"shardkv chaos run: aborted: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print("shardkv chaos run: interrupted; the cluster was stopped and its faults healed",
              file=sys.stderr)
        return 130
    print((args.out / "summary.txt").read_text(), end="")
    print(f"report: {args.out / 'report.json'}, timeline: {args.out / 'timeline.html'}")
    if report.exit_status == 0 and not args.keep_data:
        shutil.rmtree(args.out / "cluster", ignore_errors=True)
    return report.exit_status


def run(args: Any) -> int:
    return int(args._chaos_run(args))


COMMANDS = [("chaos", "chaos testing: list scenarios, run one, check a history",
             add_arguments, run)]
