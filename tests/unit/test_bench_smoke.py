"""The node benchmark's harness, proven on small real runs (no timing assertions).

- The report's arithmetic (medians, shardkv/etcd ratios, batch/single ratios, targets) on
  results built by hand.
- The load generator against a real etcd member (when Debian's etcd is installed: see
  scripts/install-reference-systems.sh), a few hundred requests.
- The whole command, ``python -m bench.node_bench``, against a real shardkv node: every
  workload on both paths, a few hundred requests, JSON checked for completeness.
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

from bench.etcd_reference import etcd_binary, etcd_member  # noqa: E402
from bench.fsync_probe import probe  # noqa: E402
from bench.kv_protocol import Target  # noqa: E402
from bench.loadgen import LoadResult, LoadSpec, percentile, run_load  # noqa: E402
from bench.report import batch_ratios, etcd_ratios, medians, table, target_checks  # noqa: E402
from bench.server_metrics import parse_samples, summarize  # noqa: E402
from bench.workloads import Shape, value_of  # noqa: E402
from bench.wrk_generator import lua_script, run_wrk, wrk_binary  # noqa: E402


def _result(system: str, variant: str, kind: str, workload: str, rps: float, keys: int = 1):
    return LoadResult(
        system=system,
        variant=variant,
        kind=kind,
        workload=workload,
        concurrency=64,
        processes=2,
        duration_s=1.0,
        requests=int(rps),
        keys=int(rps) * keys,
        errors=0,
        error_codes={},
        requests_per_s=rps,
        keys_per_s=rps * keys,
        p50_ms=1.0,
        p99_ms=rps / 1000,
        mean_ms=1.0,
        generator_cpu_cores=0.5,
        server_cpu_cores=1.0,
        server_rss_bytes=1 << 20,
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


def test_concurrency_is_split_evenly_over_processes() -> None:
    target = Target("rpc", "http://127.0.0.1:1", "shardkv")
    assert LoadSpec(target, "get", 64, 1.0, processes=3).shares() == [22, 21, 21]
    assert LoadSpec(target, "get", 1, 1.0, processes=4).shares() == [1]
    assert sum(LoadSpec(target, "put", 16, 1.0).shares()) == 16


def test_report_takes_medians_and_ratios() -> None:
    results = [
        _result("etcd", "3.4", "etcd", "put", 1000.0),
        _result("etcd", "3.4", "etcd", "put", 3000.0),
        _result("etcd", "3.4", "etcd", "put", 2000.0),
        _result("etcd", "3.4", "etcd", "get", 4000.0),
        _result("shardkv", "fsync=always", "rpc", "put", 3000.0),
        _result("shardkv", "fsync=always", "rpc", "get", 6000.0),
        _result("shardkv", "fsync=always", "rpc", "batch", 150.0, keys=100),
    ]
    rows = medians(results)
    etcd_put = next(r for r in rows if r["system"] == "etcd" and r["workload"] == "put")
    assert etcd_put["runs"] == 3
    assert etcd_put["requests_per_s"] == 2000.0  # the median, not the mean of 1000/3000/2000
    assert etcd_put["p99_ms"] == 2.0
    assert etcd_put["server_cpu_us_per_key"] == pytest.approx(500.0)  # 1 core / 2,000 keys/s

    by_workload = {r["workload"]: r for r in etcd_ratios(rows)}
    assert by_workload["put"]["ratio"] == pytest.approx(1.5)
    assert by_workload["get"]["ratio"] == pytest.approx(1.5)
    assert "batch" not in by_workload  # no etcd batch cell to compare with

    (batch,) = batch_ratios(rows)
    assert batch["ratio"] == pytest.approx(5.0)  # 15,000 keys/s vs 3,000

    checks = {c.name.split(" c=")[0]: c for c in target_checks(rows)}
    assert checks["rpc put fsync=always"].met is True
    assert checks["rpc get"].met is False  # 1.5x, the target is 2x
    text = table(rows)
    assert "1.50x" in text and "shardkv" in text and "etcd" in text


@pytest.mark.skipif(etcd_binary() is None, reason="etcd not installed")
def test_load_generator_against_a_real_etcd(tmp_path: Path) -> None:
    with etcd_member(tmp_path) as member:
        target = Target("etcd", member.url, "etcd")
        shape = Shape(key_space=200, value_size=256, batch_size=10)
        put = run_load(
            LoadSpec(target, "put", 4, 0.4, warmup_s=0.1, shape=shape, processes=2),
            server_pid=member.pid,
        )
        batch = run_load(
            LoadSpec(target, "batch", 2, 0.3, warmup_s=0.1, shape=shape, processes=1),
            server_pid=member.pid,
        )
        # every key the puts wrote is now readable: gets must not fail
        get = run_load(LoadSpec(target, "get", 4, 0.3, warmup_s=0.1, shape=shape, processes=2))
    assert put.requests > 0 and put.errors == 0, put.error_codes
    assert put.processes == 2 and put.keys == put.requests
    assert put.p50_ms > 0 and put.p99_ms >= put.p50_ms
    assert put.server_cpu_cores is not None and put.server_rss_bytes
    assert batch.requests > 0 and batch.errors == 0 and batch.keys == 10 * batch.requests
    assert get.server_cpu_cores is None  # no pid given: not measured rather than made up
    assert get.requests > 0, get.error_codes


def test_server_metrics_are_reduced_to_means_over_the_interval() -> None:
    before = parse_samples(
        "# HELP shardkv_wal_fsyncs_total x\n"
        "shardkv_wal_fsync_duration_seconds_count 10.0\n"
        "shardkv_wal_fsync_duration_seconds_sum 0.5\n"
        "shardkv_wal_group_commit_entries_count 10.0\n"
        "shardkv_wal_group_commit_entries_sum 40.0\n"
        'shardkv_op_duration_seconds_count{op="put"} 100.0\n'
        'shardkv_op_duration_seconds_sum{op="put"} 1.0\n'
    )
    after = parse_samples(
        "shardkv_wal_fsync_duration_seconds_count 30.0\n"
        "shardkv_wal_fsync_duration_seconds_sum 0.54\n"
        "shardkv_wal_group_commit_entries_count 30.0\n"
        "shardkv_wal_group_commit_entries_sum 440.0\n"
        'shardkv_op_duration_seconds_count{op="put"} 300.0\n'
        'shardkv_op_duration_seconds_sum{op="put"} 1.5\n'
        'shardkv_op_duration_seconds_count{op="get"} 100.0\n'
        'shardkv_op_duration_seconds_sum{op="get"} 0.1\n'
    )
    figures = summarize(before, after)
    assert figures["fsyncs"] == 20
    assert figures["fsync_mean_ms"] == pytest.approx(2.0)  # 0.04 s over 20 fsyncs
    assert figures["entries_per_group"] == pytest.approx(20.0)  # 400 entries in 20 groups
    assert figures["server_op_mean_ms"] == pytest.approx(2.0)  # 0.6 s over 300 ops
    assert summarize(None, after) == {}
    etcd = summarize(
        parse_samples("etcd_disk_wal_fsync_duration_seconds_count 1\n"),
        parse_samples(
            "etcd_disk_wal_fsync_duration_seconds_count 5\n"
            "etcd_disk_wal_fsync_duration_seconds_sum 0.002\n"
        ),
    )
    assert etcd["fsyncs"] == 4 and etcd["fsync_mean_ms"] == pytest.approx(0.5)


def test_fsync_probe_measures_both_modes_and_leaves_nothing(tmp_path: Path) -> None:
    result = probe(str(tmp_path), blocks=2, write_bytes=64, block_writes=10)
    for mode in ("appending", "preallocated"):
        figures = result[mode]
        assert figures["count"] == 20
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert list(tmp_path.iterdir()) == []


def test_wrk_scripts_carry_the_exact_value_and_key_space() -> None:
    value = bytes(range(256))  # every byte, quotes and backslashes included
    rest = lua_script(Target("rest", "http://h:1", "shardkv"), "mix", 500, value)
    assert "math.random(0, 499)" in rest and "< 0.1" in rest
    assert "\\034" in rest and "\\092" in rest  # '"' and '\\' escaped as decimal bytes
    etcd = lua_script(Target("etcd", "http://h:1", "etcd"), "put", 3, b"v")
    assert '"YmVuY2g6MDAwMDAwMDI="' in etcd  # base64 of bench:00000002, the last key
    assert "< 1.0" in etcd


@pytest.mark.skipif(etcd_binary() is None or wrk_binary() is None, reason="etcd or wrk missing")
def test_wrk_generator_against_a_real_etcd(tmp_path: Path) -> None:
    shape = Shape(key_space=100, value_size=256)
    with etcd_member(tmp_path) as member:
        target = Target("etcd", member.url, "etcd")
        spec = LoadSpec(target, "put", 2, 1.0, warmup_s=0, shape=shape, processes=1)
        result = run_wrk(spec, value_of(shape), server_pid=member.pid)
    assert result.kind == "etcd/wrk"
    assert result.requests > 0 and result.errors == 0, result.error_codes
    assert result.p99_ms >= result.p50_ms > 0


@pytest.mark.integration
def test_node_bench_command_against_a_real_node(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "bench.node_bench", "--quick", "--no-etcd",
        "--fsync", "never", "--concurrency", "2", "--duration", "0.3", "--warmup", "0.1",
        "--key-space", "300", "--batch-size", "10", "--processes", "1",
        "--work-dir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    with_wrk = wrk_binary() is not None
    if with_wrk:
        command.append("--wrk")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    cells = {(r["kind"], r["workload"]): r for r in document["medians"]}
    expected = {
        (kind, workload) for kind in ("rpc", "rest") for workload in ("get", "mix", "put", "batch")
    }
    if with_wrk:
        expected |= {("rest/wrk", workload) for workload in ("get", "mix", "put")}
    assert set(cells) == expected
    for (kind, workload), row in cells.items():
        assert row["requests"] > 0, (kind, workload)
        assert row["errors"] == 0, (kind, workload, document["results"])
        assert row["server_cpu_cores"] is not None
        assert row["server_metrics"]["server_op_mean_ms"] is not None, (kind, workload)
    assert cells[("rpc", "batch")]["keys_per_s"] == pytest.approx(
        10 * cells[("rpc", "batch")]["requests_per_s"]
    )
    assert {b["kind"] for b in document["batch_vs_single"]} == {"rpc", "rest"}
    assert "keys/s" in done.stdout  # the human table


def test_client_bench_medians_and_ratios_pair_the_same_shape() -> None:
    from bench.client_cells import Cell, medians, ratios, render_ratios

    def cell(system: str, workload: str, rate: int, processes: int = 1) -> Cell:
        return Cell(system, workload, 16, processes, ops=rate * 2, errors=0, seconds=2.0,
                    p50_ms=rate / 1000, p99_ms=None, gen_cpu_cores=0.5)

    summary = medians([
        cell("shardkv 2x3", "get", 900), cell("shardkv 2x3", "get", 3000),
        cell("shardkv 2x3", "get", 1000), cell("shardkv 2x3", "get", 4000, processes=2),
        cell("etcd 3 members", "get", 500), cell("etcd 3 members", "get", 2000, processes=2),
        cell("redis always", "get", 10_000),
    ])  # fmt: skip
    first = summary[0]
    assert (first.system, first.processes) == ("shardkv 2x3", 1)
    assert first.ops_per_s == 1000  # the median of 900, 3000, 1000
    assert first.p50_ms == 1.0 and first.p99_ms is None  # no samples: not made up
    rows = {r["processes"]: r for r in ratios(summary)}
    assert rows[1]["etcd 3 members"]["shardkv_over"] == 2.0
    assert rows[2]["etcd 3 members"]["shardkv_over"] == 2.0  # paired with etcd at 2 processes
    # redis-benchmark is one process: both shardkv cells compare with it
    assert rows[1]["redis always"]["shardkv_over"] == 0.1
    assert rows[2]["redis always"]["shardkv_over"] == 0.4
    assert "x2.00" in render_ratios(ratios(summary))


@pytest.mark.integration
def test_client_bench_command_with_its_references(tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "client.json"
    command = [
        sys.executable, "-m", "bench.client_bench", "--standalone", "--workloads", "mget100",
        "--concurrency", "4", "--processes", "1", "--duration", "0.3", "--warmup", "0.1",
        "--redis-requests", "200", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    systems = {c["system"].split()[0] for c in document["medians"]}
    expected = {"shardkv"}
    if etcd_binary() is not None:
        expected.add("etcd")
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        expected.add("redis")
    assert systems == expected
    for c in document["medians"]:
        assert c["ops"] > 0 and c["errors"] == 0, c
        assert c["gen_cpu_cores"] is not None and c["gen_cpu_cores"] > 0, c
    assert [r["workload"] for r in document["ratios"]] == ["mget100"]
    for row in document["ratios"]:
        for reference in (k for k in row if isinstance(row[k], dict)):
            assert row[reference]["shardkv_over"] > 0, (reference, row)
    assert "ratio" in done.stdout  # the human table
