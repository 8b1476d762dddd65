"""``shardkv chaos ...``: re-check a recorded history (``check``).

``shardkv chaos check DIR/history.jsonl --out DIR2`` runs every checker again over a saved
history (after a checker fix, or with another staleness slack) and writes a fresh report.
The exit status is the report's: 0 ok, 1 anomaly, 2 unknown. ``run`` and ``list`` join here
with the runner.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shardkv.chaos.history import load_history
from shardkv.chaos.report import analyze, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="chaos_command", metavar="ACTION")
    sub.required = True
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


def run(args: Any) -> int:
    return int(args._chaos_run(args))


COMMANDS = [("chaos", "chaos testing: check recorded histories", add_arguments, run)]
