"""bench/capacity_latency.py: the model's predictions from measured rows (no timing
assertions: the arithmetic on rows built by hand), and the launcher's per-process environment
that lets a node advertise the proxy in front of it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

import shardkv.cluster.launcher as launcher  # noqa: E402
from shardkv.cluster.launcher import ClusterPlan, LocalCluster  # noqa: E402

from bench.capacity_latency import render, summarise  # noqa: E402


def _row(rtt: float, added: float, get_ms: float, put_ms: float) -> dict:
    def cell(p50: float) -> dict:
        return {"ops_per_s": 100.0, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0,
                "node_cores": 0.5, "proxy_cores": 0.1}
    return {"rtt_ms": rtt, "added_rtt_ms": added, "get_c1": cell(get_ms),
            "put_c1": cell(put_ms), "put_c64": cell(30.0)}


def test_the_model_adds_one_measured_rtt_to_a_get_and_two_to_a_put() -> None:
    rows = [_row(0, 0.2, 0.6, 3.0), _row(0, 0.4, 0.8, 3.2), _row(0, 0.3, 0.7, 3.1),
            _row(1, 2.3, 3.0, 7.5), _row(1, 2.7, 3.4, 8.5), _row(1, 2.5, 3.2, 8.0)]
    base, delayed = summarise(rows, [0, 1])
    assert base["added_rtt_ms"] == pytest.approx(0.3)
    assert base["model_get_p50_ms"] == base["get_p50_ms"] == pytest.approx(0.7)
    # The delay alone is the added RTT minus what the proxy adds at 0 ms: 2.5 - 0.3.
    assert delayed["model_get_p50_ms"] == pytest.approx(0.7 + 2.2)
    assert delayed["model_put_p50_ms"] == pytest.approx(3.1 + 2 * 2.2)
    assert delayed["rounds"] == 3
    table = render([base, delayed])
    assert "8.00 (  7.50) ms" in table


def test_a_process_can_be_given_its_own_environment(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    plan = ClusterPlan.new(tmp_path, shards=1, replicas=1, coordinators=1)
    cluster = LocalCluster(tmp_path, plan)
    node = plan.nodes[0]
    cluster.process_env = {node.id: {"SHARDKV_ADVERTISE_URL": "http://127.0.0.1:1"}}
    seen: dict[str, dict[str, str]] = {}

    def spawn(argv: list[str], log: Path, env: dict[str, str]) -> object:
        seen[argv[argv.index("--id") + 1] if "--id" in argv else "?"] = env
        return object()

    monkeypatch.setattr(launcher, "spawn_logged", spawn)
    cluster.start_process(node)
    cluster.start_process(plan.coordinators[0])
    assert seen[node.id]["SHARDKV_ADVERTISE_URL"] == "http://127.0.0.1:1"
    assert "SHARDKV_ADVERTISE_URL" not in seen[plan.coordinators[0].id]
