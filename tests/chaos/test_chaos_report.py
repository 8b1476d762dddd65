"""The report: verdicts, files written, and the timeline page."""

from __future__ import annotations

import itertools
import json

from shardkv.chaos.history import History
from shardkv.chaos.report import analyze, write_report


def run_history(stale: bool) -> History:
    ticks = itertools.count()
    h = History(clock=lambda: next(ticks) * 0.1)
    h.record_nemesis("partition", "start", ["n1"])
    w = h.invoke(0, "write", "r", "a")
    h.complete(w, "ok", version=1)
    w = h.invoke(0, "write", "r", "b")
    h.complete(w, "ok", version=2)
    i = h.invoke(1, "incr", "c", 1)
    h.complete(i, "ok", 1)
    t = h.invoke(2, "write", "r", "c")
    h.complete(t, "info", error="TIMEOUT")
    e = h.invoke(3, "read", "r", consistency="eventual", max_staleness_ms=50)
    h.complete(e, "ok", "a" if stale else "b", version=1 if stale else 2)
    a = h.invoke(4, "append", "l", 1)
    h.complete(a, "ok", version=3)
    h.record_nemesis("partition", "stop", ["n1"])
    for key, out, version in (("r", "b", 2), ("c", 1, 4), ("l", [1], 3)):
        f = h.invoke(5, "read", key, consistency="strong", final=True)
        h.complete(f, "ok", out, version=version)
    return h


def test_clean_run_passes_and_writes_every_file(tmp_path):
    h = run_history(stale=False)
    report = analyze(h, digests={"s1": {"n1": "d", "n2": "d"}}, meta={"scenario": "unit"})
    assert report.verdict == "ok", report.summary()
    assert report.exit_status == 0
    text = write_report(report, h, tmp_path)
    assert "chaos verdict: OK" in text
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["verdict"] == "ok"
    assert {lin["model"] for lin in data["linearizability"]} == {
        "versioned-register", "counter", "append"
    }
    assert set(data["checks"]) == {
        "lost-writes", "staleness", "counters", "convergence", "availability"
    }
    page = (tmp_path / "timeline.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "partition" in page
    assert (tmp_path / "history.jsonl").stat().st_size > 0


def test_stale_read_fails_the_run():
    report = analyze(run_history(stale=True))
    assert report.verdict == "anomaly"
    assert report.exit_status == 1
    assert report.check("staleness").anomalies[0]["kind"] == "stale-read"
    assert "stale-read" in report.summary()


def test_diverged_replicas_fail_the_run():
    report = analyze(run_history(stale=False), digests={"s1": {"n1": "x", "n2": "y"}})
    assert report.verdict == "anomaly"


def test_shardkv_chaos_check_rechecks_a_saved_history(tmp_path, capsys):
    from shardkv.cluster.cli import main

    run_dir = tmp_path / "run"
    h = run_history(stale=True)
    write_report(analyze(h), h, run_dir)
    digests = tmp_path / "digests.json"
    digests.write_text(json.dumps({"s1": {"n1": "a", "n2": "a"}}))
    status = main(["chaos", "check", str(run_dir / "history.jsonl"), "--digests", str(digests)])
    assert status == 1
    assert "stale-read" in capsys.readouterr().out
    status = main(["chaos", "check", str(run_dir / "history.jsonl"), "--slack-ms", "1000",
                   "--out", str(tmp_path / "again")])
    assert status == 0
    assert json.loads((tmp_path / "again" / "report.json").read_text())["verdict"] == "ok"
    assert main(["chaos", "check", str(tmp_path / "missing.jsonl")]) == 2
