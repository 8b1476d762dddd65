"""Disk use over time under the overwrite workload, and what snapshots cost in throughput.

    python -m bench.disk_bench run --seconds 180 --label after --out /tmp/after.json
    python -m bench.disk_bench run --seconds 180 --label snap-often \\
        --node-env SHARDKV_SNAPSHOT_MIN_WAL_BYTES=1048576 --node-env SHARDKV_SNAPSHOT_WAL_RATIO=1
    python -m bench.disk_bench table /tmp/before.json /tmp/after.json ...
    python -m bench.disk_bench plot /tmp/before.json /tmp/after.json --svg docs/disk-overwrite.svg

``run`` starts a local cluster (one coordinator, one shard of three members, as ``shardkv
up`` would, in a temporary directory), drives ``bench/disk_workload.py``'s overwrite workload
(4 clients, ``mput`` batches of 50 values of 200 bytes over 20,000 keys), samples every
member's data directory from the outside every ``--interval`` seconds, stops everything, and
prints one JSON document (``--out`` also writes it) and a table. The node code measured is
whatever ``shardkv`` imports: to measure another commit, put a checkout of it first on
``PYTHONPATH`` (``docs/operations.md``, "Disk", gives the exact commands). ``table`` and
``plot`` read such documents; ``plot`` draws the largest member's disk use over time as a
self-contained SVG (no plotting library).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.disk_workload import OverwriteSpec, overwrite, sample_disk

MiB = 1 << 20


def _code_version() -> str:
    """Which shardkv this run measures: the commit of the checkout it is imported from."""
    import shardkv.node

    source = Path(shardkv.node.__file__).resolve().parent
    done = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return f"{done.stdout.strip() or '?'} ({source.parent})"


async def _drive(coordinator: str, spec: OverwriteSpec, members: dict[str, Path],
                 interval_s: float) -> tuple[Any, list[dict[str, Any]]]:
    from shardkv.client import Client, Retry
    from shardkv.client.retry import ExponentialBackoff

    retry = Retry(ExponentialBackoff(base=0.05, cap=0.5), retries=50)
    stop = asyncio.Event()
    async with Client([coordinator], retry=retry, timeout=30.0) as kv:
        sampler = asyncio.create_task(sample_disk(members, interval_s, stop))
        try:
            result = await overwrite(kv.mput, spec)
        finally:
            stop.set()
            samples = await sampler
    return result, samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    from shardkv.cluster.launcher import ClusterPlan, LocalCluster

    for setting in args.node_env:
        name, _, value = setting.partition("=")
        os.environ[name] = value  # the launcher's processes inherit the environment
    spec = OverwriteSpec(keys=args.keys, value_bytes=args.value_bytes, batch=args.batch,
                         clients=args.clients, seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="disk-bench-") as tmp:
        directory = Path(tmp)
        plan = ClusterPlan.new(directory, shards=1, replicas=args.replicas, coordinators=1,
                               engine=args.engine, fsync=args.fsync)
        cluster = LocalCluster(directory, plan)
        try:
            cluster.start()
            cluster.wait_ready(120)
            members = {n.id: Path(n.data_dir) for n in plan.nodes}
            result, samples = asyncio.run(
                _drive(plan.coordinators[0].url, spec, members, args.interval))
            final = samples[-1]
        finally:
            cluster.stop()
    peaks = {m: max(s[m] for s in samples) for m in members}
    written = result.batches * spec.batch * (spec.value_bytes + 9)
    return {
        "label": args.label, "code": args.code or _code_version(), "engine": args.engine,
        "fsync": args.fsync, "node_env": list(args.node_env),
        "workload": {"keys": spec.keys, "value_bytes": spec.value_bytes, "batch": spec.batch,
                     "clients": spec.clients, "seconds": round(result.seconds, 1)},
        "live_bytes": spec.live_bytes, "written_bytes": written,
        "batches": result.batches, "puts_per_s": round(result.puts_per_s(spec), 1),
        "errors": result.errors, "peak_bytes": peaks,
        "final_bytes": {m: final[m] for m in members}, "samples": samples,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(runs: list[dict[str, Any]]) -> str:
    header = ("label", "engine", "seconds", "puts/s", "written MB", "live MB",
              "peak member MB", "final member MB")
    rows = [header]
    for r in runs:
        rows.append((r["label"], r["engine"], str(r["workload"]["seconds"]),
                     f"{r['puts_per_s']:.0f}", f"{r['written_bytes'] / MiB:.0f}",
                     f"{r['live_bytes'] / MiB:.1f}",
                     f"{max(r['peak_bytes'].values()) / MiB:.1f}",
                     f"{max(r['final_bytes'].values()) / MiB:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows) + "\n"


COLORS = ("#c0392b", "#2471a3", "#229954", "#7d3c98", "#ca6f1e")


def svg(runs: list[dict[str, Any]], title: str) -> str:
    """The largest member's data directory over time, one line per run, log-free linear
    axes, as a standalone SVG document."""
    width, height, left, right, top, bottom = 760, 420, 70, 20, 40, 50
    series = [[(s["t"], max(v for k, v in s.items() if k != "t") / MiB) for s in r["samples"]]
              for r in runs]
    t_max = max(t for points in series for t, _ in points) or 1.0
    y_max = max(y for points in series for _, y in points) * 1.1 or 1.0

    def x(t: float) -> float:
        return left + (width - left - right) * t / t_max

    def y(v: float) -> float:
        return height - bottom - (height - top - bottom) * v / y_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for i in range(6):  # grid and labels
        value, t = y_max * i / 5, t_max * i / 5
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f'{value:.0f}</text>')
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 18}" text-anchor="middle">'
                     f'{t:.0f}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">seconds of '
                 f'overwrite workload</text>')
    parts.append(f'<text x="16" y="{height / 2}" text-anchor="middle" transform="rotate(-90 '
                 f'16 {height / 2})">largest member data dir (MiB)</text>')
    for i, (run_, points) in enumerate(zip(runs, series, strict=True)):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{path}"/>')
        label = (f"{run_['label']} ({run_['engine']}): peak "
                 f"{max(run_['peak_bytes'].values()) / MiB:.0f} MiB, "
                 f"{run_['puts_per_s']:.0f} puts/s")
        parts.append(f'<rect x="{left + 10}" y="{top + 8 + 18 * i}" width="12" height="3" '
                     f'fill="{color}"/>')
        parts.append(f'<text x="{left + 28}" y="{top + 13 + 18 * i}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.disk_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="one measured run")
    r.add_argument("--label", default="run")
    r.add_argument("--seconds", type=float, default=180.0)
    r.add_argument("--keys", type=int, default=20_000)
    r.add_argument("--value-bytes", type=int, default=200)
    r.add_argument("--batch", type=int, default=50)
    r.add_argument("--clients", type=int, default=4)
    r.add_argument("--replicas", type=int, default=3)
    r.add_argument("--engine", choices=("memory", "sqlite"), default="memory")
    r.add_argument("--fsync", choices=("always", "interval", "never"), default="always")
    r.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    r.add_argument("--node-env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for every node, e.g. SHARDKV_SNAPSHOT_WAL_RATIO=1")
    r.add_argument("--out", type=Path, help="also write the JSON here")
    r.add_argument("--code", help="what code this measures (default: git commit of the "
                   "imported shardkv)")
    t = sub.add_parser("table", help="a table of runs")
    t.add_argument("files", nargs="+", type=Path)
    p = sub.add_parser("plot", help="disk over time as an SVG")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--svg", type=Path, required=True)
    p.add_argument("--title", default="Disk use under the overwrite workload")
    args = parser.parse_args(argv)
    if args.action == "run":
        result = run(args)
        text = json.dumps(result)
        if args.out:
            args.out.write_text(text + "\n")
        print(text)
        sys.stderr.write(table([result]))
        return 0
    runs = [json.loads(f.read_text()) for f in args.files]
    if args.action == "table":
        sys.stdout.write(table(runs))
    else:
        args.svg.write_text(svg(runs, args.title))
        print(f"wrote {args.svg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
