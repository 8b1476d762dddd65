"""The per-request cost benchmarks (issue 17), proven on tiny real runs (no timing assertions).

- cost_bench's arithmetic (medians with ranges, per-round A/B ratios, ratios to etcd) on
  records built by hand.
- ``python -m bench.cost_bench`` A/B of uvloop on a real node: both sides measured, each on
  the loop it was asked for (the environment reaches the node), CPU per request recorded.
- ``python -m bench.hot_path_bench``: one small round, every operation measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from bench.cost_bench import paired_ratios, summarize, versus_etcd  # noqa: E402


def _record(round_no: int, system: str, variant: str, workload: str, rps: float,
            us: float) -> dict:
    return {"round": round_no, "system": system, "variant": variant, "topology": "single",
            "path": "rest" if system == "shardkv" else "etcd", "workload": workload,
            "generator": "wrk", "requests_per_s": rps, "p50_ms": 1.0, "p99_ms": 2.0,
            "errors": 0, "server_cpu_cores": rps * us / 1e6, "server_us_per_op": us,
            "primary_us_per_op": us, "generator_us_per_op": 20.0, "generator_cpu_cores": 0.1,
            "load_avg_1m": 1.0}


def test_rounds_reduce_to_medians_ranges_and_paired_ratios() -> None:
    records = [
        _record(0, "shardkv", "A", "put", 1000, 100), _record(0, "shardkv", "B", "put", 800, 200),
        _record(1, "shardkv", "A", "put", 3000, 90), _record(1, "shardkv", "B", "put", 900, 100),
        _record(2, "shardkv", "A", "put", 2000, 80), _record(2, "shardkv", "B", "put", 700, 160),
        _record(0, "etcd", "1 member", "put", 500, 300),
    ]
    rows = {(r["system"], r["variant"]): r for r in summarize(records)}
    assert rows[("shardkv", "A")]["requests_per_s"] == 2000
    assert rows[("shardkv", "A")]["requests_per_s_range"] == [1000, 3000]
    assert rows[("shardkv", "A")]["server_us_per_op"] == 90
    ratios = paired_ratios(records, "A", "B", "server_us_per_op")["single rest/wrk put"]
    assert ratios == {"median": 0.5, "min": 0.5, "max": 0.9}  # 100/200, 90/100, 80/160
    etcd = {r["variant"]: r for r in versus_etcd(summarize(records))}
    assert etcd["A"]["ratio"] == pytest.approx(4.0)
    assert etcd["A"]["cpu_ratio"] == pytest.approx(0.3)


def test_cost_bench_ab_of_uvloop_on_a_real_node(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    command = [
        sys.executable, "-m", "bench.cost_bench", "--ab", "uvloop", "--rounds", "1",
        "--topologies", "single", "--paths", "rpc-put,rest-get", "--no-etcd",
        "--fsync", "never", "--concurrency", "2", "--duration", "0.3", "--warmup", "0.1",
        "--key-space", "300", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    loops = {r["variant"]: r["event_loop"] for r in document["records"]}
    assert loops == {"A:uvloop=on": "uvloop", "B:uvloop=off": "asyncio"}
    cells = {(r["variant"], r["path"], r["workload"]) for r in document["medians"]}
    assert {(v, "rpc", "put") for v in loops} | {(v, "rest", "get") for v in loops} == cells
    for row in document["medians"]:
        assert row["errors"] == 0 and row["server_us_per_op"] > 0, row
    assert set(document["a_over_b"]["server_us_per_op"]) == {
        "single rpc/python put", f"single rest/{document['medians'][-1]['generator']} get"}
    assert "srv us/op" in done.stdout


def test_hot_path_bench_measures_every_operation(tmp_path: Path) -> None:
    out = tmp_path / "hot.json"
    command = [sys.executable, "-m", "bench.hot_path_bench", "--rounds", "1", "--ops", "256",
               "--concurrency", "4", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    medians = json.loads(out.read_text())["medians"]["A"]
    assert set(medians) == {"get", "put", "put+session", "cas"}
    assert all(us > 0 for us in medians.values())


def test_profile_summary_counts_the_loop_thread_running_python() -> None:
    from bench.profile_summary import loop_samples, summary

    raw = [
        "main (x.py:1);Runner.run (asyncio/runners.py:118) 50",  # idle (or uvloop's C code)
        "main (x.py:1);execute (/r/node/api/operations.py:9);Store.put (/r/store.py:3) 30",
        "main (x.py:1);_CoalescingTransport.flush (/r/node/api/rpc.py:90) 10",
        "_bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:8);fdatasync (d:1) 40",
    ]
    samples = loop_samples(raw)
    assert sum(n for _, n in samples) == 40
    lines = summary(samples)
    assert lines[0].startswith("40 samples")
    shares = {line.rsplit(None, 2)[0].strip(): line.rsplit(None, 2)[1] for line in lines[1:11]}
    assert shares["operation layer (execute, arg checks)"] == "75.0"
    assert shares["Store.put (store + pipeline submit)"] == "75.0"
    assert shares["socket writes (send)"] == "25.0"
    assert shares["metrics"] == "0.0"
