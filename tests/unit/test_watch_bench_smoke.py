"""The watch fan-out benchmark's harness, proven on a tiny real run (no timing assertions).

- Its arithmetic (shares of watchers, a round's figures, medians and ranges over rounds) on
  numbers built by hand.
- The whole command, ``python -m bench.watch_bench``, with 4 watchers in 2 processes and 20
  writes, against a real node and (when Debian's etcd is installed) a real etcd member: every
  event arrives, and the JSON and table carry both systems.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from bench.etcd_reference import etcd_binary  # noqa: E402
from bench.watch_bench import _paced, ratios, round_report, shares, summarize  # noqa: E402


async def test_a_paced_writer_waits_for_each_slot_and_an_unpaced_one_does_not() -> None:
    """``--rate``: put i is sent no earlier than ``start + i / rate`` (a lower bound only:
    sleeping never ends early); rate 0 never waits, nor does a put already late."""
    start = time.monotonic()
    await _paced(5, start, 0.0)
    await _paced(0, start - 10, 50.0)
    slot = start + 3 / 50.0
    await _paced(3, start, 50.0)
    assert time.monotonic() >= slot


def test_watchers_are_split_evenly_over_processes() -> None:
    assert shares(1000, 4) == [250, 250, 250, 250]
    assert shares(10, 4) == [3, 3, 2, 2]
    assert shares(2, 4) == [1, 1]


def test_a_round_counts_latency_from_ack_and_clamps_early_events() -> None:
    sent, acked = [0.0, 1.0], [0.5, 1.5]
    # process 1 saw write 0 at 0.6 and write 1 at 1.4 (before its ack); process 2 both at 2.0
    report = round_report(sent, acked, [([0, 1], [0.6, 1.4]), ([0, 1], [2.0, 2.0])])
    assert report["events"] == 4
    assert report["events_per_s"] == 2.0  # 4 events over 2 s from the first send
    assert report["before_ack_share"] == 0.25
    assert report["ack_to_event_ms"]["p50"] == 300.0  # lags 0.1, 0, 1.5, 0.5 -> median 0.3
    assert report["write_ops_per_s"] == round(2 / 1.5, 1)


def test_rounds_reduce_to_medians_ranges_and_ratios() -> None:
    def run(system: str, rate: float, p99: float) -> dict:
        return {"system": system, "events": 10, "expected_events": 10, "events_per_s": rate,
                "ack_to_event_ms": {"p50": 1.0, "p99": p99}, "write_ops_per_s": 5.0}

    rounds = [run("shardkv", 100, 9), run("etcd", 50, 10), run("shardkv", 300, 3),
              run("etcd", 70, 20), run("shardkv", 200, 6), run("etcd", 60, 30)]
    summary = summarize(rounds)
    assert summary["shardkv"]["events_per_s"] == 200
    assert summary["shardkv"]["events_per_s_range"] == [100, 300]
    assert summary["etcd"]["ack_p99_ms"] == 20 and summary["etcd"]["events_complete"]
    assert summary["shardkv"]["watcher_cpu_cores"] is None  # absent figures stay absent
    assert ratios(summary)["events_per_s"] == round(200 / 60, 2)
    assert ratios(summary)["ack_p99_ms"] == 0.3


def test_watch_bench_command_on_real_servers(tmp_path: Path) -> None:
    out = tmp_path / "watch.json"
    command = [sys.executable, "-m", "bench.watch_bench", "--watchers", "4", "--processes", "2",
               "--writes", "200", "--rounds", "1", "--timeout", "20", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    systems = {"shardkv", "etcd"} if etcd_binary() else {"shardkv"}
    assert set(document["summary"]) == systems
    assert document["processes"] == 2
    for row in document["rounds"]:
        # 200 writes, not 20: /proc counts CPU in 10 ms ticks, and a cheap server's 20
        # writes and 80 events could fit in none (server CPU 0.0, seen in CI).
        assert row["events"] == row["expected_events"] == 800, row
        assert row["watcher_cpu_cores"] > 0 and row["server_cpu_us_per_event"] > 0, row
    assert "ack p99 ms" in done.stdout
