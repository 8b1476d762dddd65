"""Event-loop slices per process and per phase of a reshard bench run (bench/loop_probe).

    SHARDKV_LOOP_PROBE_DIR=/tmp/probe PYTHONPATH=bench/loop_probe \\
        python -m bench.reshard_bench --keys 1000000 --json run.json
    python -m bench.loop_probe_report /tmp/probe run.json

For each process (node id, or ``bench`` for the client) and each phase (baseline, before
the copy, the copy, 0.5 s either side of the flip, the cleaning), from the per-second lines
the probe wrote: loop busy and CPU seconds per second, slices of at least 2/5/10/20 ms, the
longest, and the callbacks with the most milliseconds in slices of 1 ms or more. Seconds
are whole wall-clock seconds, so a phase's edges are rounded to them.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any


def _process_name(argv: list[str]) -> str:
    if "--id" in argv:
        return argv[argv.index("--id") + 1]
    return "bench" if any("reshard_bench" in a for a in argv) else " ".join(argv[:3])


def _phases(at: dict[str, float]) -> list[tuple[str, float, float]]:
    flip = at["flipped"]
    return [("baseline", at["baseline"], at["started"]),
            ("before_copy", at["started"], at["copy_started"]),
            ("copy", at["copy_started"], flip - 0.5), ("flip_1s", flip - 0.5, flip + 0.5),
            ("cleaning", flip + 0.5, at["finished"])]


def report(directory: Path, run: dict[str, Any], top: int) -> str:
    phases = _phases(run["at"])
    out: list[str] = []
    for path in sorted(directory.glob("loop-*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line]
        if not lines or "argv" not in lines[0]:
            continue
        name = _process_name(lines[0]["argv"])
        if name.startswith("c") and "coordinator" in " ".join(lines[0]["argv"]):
            name = f"coordinator {name}"
        for phase, start, end in phases:
            rows = [r for r in lines[1:] if start - 0.5 <= r["t"] < end - 0.5]
            if not rows:
                continue
            seconds = len(rows)
            ge = [sum(r["ge_ms"][i] for r in rows) for i in range(5)]
            longest = max(rows, key=lambda r: r["max_ms"])
            slow: Counter[str] = Counter()
            for r in rows:
                for callback, (_count, ms) in r["slow"].items():
                    slow[callback] += ms
            busy = sum(r["busy_s"] for r in rows) / seconds
            cpu = sum(r["cpu_s"] for r in rows) / seconds
            out.append(
                f"{name:<6} {phase:<11} {seconds:>3} s  busy {busy:.2f}  cpu {cpu:.2f}  "
                f">=2/5/10/20 ms {ge[1]}/{ge[2]}/{ge[3]}/{ge[4]}  max {longest['max_ms']} ms "
                f"({longest['max_name'][:70]})")
            for callback, ms in slow.most_common(top):
                out.append(f"{'':<20}{ms / seconds:7.1f} ms/s  {callback[:100]}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("run", type=Path, help="the bench's --json output")
    parser.add_argument("--top", type=int, default=4)
    args = parser.parse_args()
    print(report(args.directory, json.loads(args.run.read_text()), args.top))


if __name__ == "__main__":
    main()
