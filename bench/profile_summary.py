"""Where a node's event-loop thread spent its samples: a py-spy raw profile, by cost.

    python -m bench.node_bench --workloads put --concurrency 64 --fsync always \\
        --no-etcd --profile prof/ --profile-format raw
    python -m bench.profile_summary prof/fsync-always-rpc-put-c64-run1.txt

Samples of the worker threads (the WAL's fsync) and of the loop waiting in its poll are left
out: what remains is the loop thread running Python. On uvloop the loop's own C code shows as
``Runner.run`` and is left out with the idle time (py-spy cannot tell them apart without
``--native``). Each cost is inclusive (a sample under ``Store.put`` inside ``execute`` counts
for both), so the rows overlap. docs/performance.md has the before/after of issue 17.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

COSTS = (
    ("socket writes (send)", ("CoalescingTransport.flush", "StreamWriter._writelines",
                              "_SelectorSocketTransport.write ")),
    ("HTTP/WS parsing, routing, middlewares", (
        "RequestHandler.data_received", "RequestHandler.start", "WebSocketResponse.receive",
        "WebSocketReader", "Application._handle", "UrlDispatcher.resolve",
        "_GatedProtocol.data_received")),
    ("operation layer (execute, arg checks)", ("api/operations.py", "api/arguments.py",
                                               "api/multi_key_operations.py")),
    ("Store.put (store + pipeline submit)", ("Store.put ",)),
    ("WAL append (encode, CRC, frame)", ("WriteAheadLog.append_nowait",)),
    ("WAL group write + fsync hand-off", ("WriteAheadLog._run_writer",
                                          "WriteAheadLog._write_group")),
    ("applier (engine apply, wake writers)", ("CommitPipeline._apply_in_order",)),
    ("response encode + send", ("WebSocketResponse.send_bytes", "respond (",
                                "Response.__init__", "StreamResponse.prepare")),
    ("metrics", ("NodeMetrics.observe",)),
    ("task/future machinery", ("RpcConnection._start", "shield (", "create_task")),
)
_THREADS = ("concurrent/futures/thread.py", "Thread._bootstrap")
_IDLE = ("EpollSelector.select", "Runner.run", "select (selectors")


def loop_samples(lines: list[str]) -> list[tuple[str, int]]:
    """(stack, count) of the loop thread running Python, from py-spy's raw format."""
    out = []
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1].lstrip()
        if any(t in stack for t in _THREADS) or leaf.startswith(_IDLE):
            continue
        out.append((stack, int(count)))
    return out


def summary(samples: list[tuple[str, int]], top: int = 12) -> list[str]:
    total = sum(n for _, n in samples) or 1
    lines = [f"{total} samples of the loop thread running Python"]
    for name, patterns in COSTS:
        n = sum(c for s, c in samples if any(p in s for p in patterns))
        lines.append(f"  {name:<42} {100 * n / total:5.1f} %")
    leaves: collections.Counter[str] = collections.Counter()
    for stack, n in samples:
        leaves[stack.split(";")[-1].split(" (")[0].strip()] += n
    lines.append("  top functions by own samples:")
    lines += [f"    {100 * n / total:5.1f} % {name}" for name, n in leaves.most_common(top)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"== {path}")
        print("\n".join(summary(loop_samples(path.read_text().splitlines()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
