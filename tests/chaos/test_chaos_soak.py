"""The soak loop without clusters: a fake runner stands in for ``run_scenario`` so the cycle,
the seeds, what is kept and the tables are checked in milliseconds (the real thing is
``shardkv chaos soak``; its table is in chaos/README.md)."""

from __future__ import annotations

import itertools
from pathlib import Path

from shardkv.chaos.history import History
from shardkv.chaos.report import analyze, write_report
from shardkv.chaos.runner import RunAborted, RunOptions
from shardkv.chaos.soak import SoakOptions, default_scenarios, soak


def _history(lost: bool) -> History:
    h = History(clock=iter(float(t) for t in range(100)).__next__)
    h.record_nemesis("kill-node", "start", ["n1"])
    w = h.invoke(0, "write", "reg-0", "a", model="versioned-register")
    h.complete(w, "ok", version=5)
    h.record_nemesis("kill-node", "stop", ["n1"])
    r = h.invoke(1, "read", "reg-0", consistency="strong", final=True,
                 model="versioned-register")
    h.complete(r, "ok", None if lost else "a", version=None if lost else 5)
    return h


def _fake_runner(calls: list[RunOptions]):
    async def run(opts: RunOptions):
        calls.append(opts)
        if opts.scenario.name == "partition-node":
            raise RunAborted("no loopback partition here")
        history = _history(lost=opts.scenario.name == "kill-minority")
        report = analyze(history, meta={"operations_by_outcome": {"ok": 2}})
        (opts.out / "cluster" / "logs").mkdir(parents=True)
        (opts.out / "cluster" / "logs" / "n1.log").write_text("log\n")
        (opts.out / "cluster" / "n1").mkdir()
        write_report(report, history, opts.out)
        return report
    return run


async def test_soak_keeps_failing_runs_only_and_writes_one_table(tmp_path: Path) -> None:
    calls: list[RunOptions] = []
    ticks = itertools.count(0, 30)  # each clock read is 30 s later: a bounded soak
    opts = SoakOptions(hours=0.5, out=tmp_path, seed=3, run_s=10.0,
                       scenarios=["kill-minority", "pause-primary", "partition-node"])
    rows = await soak(opts, run=_fake_runner(calls), clock=lambda: float(next(ticks)))
    names = [r.scenario for r in rows]
    assert names.count("partition-node") == 1  # aborted once, not tried again
    assert names.count("kill-minority") >= 2  # cycled
    assert len({r.seed for r in rows}) == len(rows)  # a fresh seed every run
    failing = [r for r in rows if r.scenario == "kill-minority"]
    assert all(r.verdict == "anomaly" and r.anomalies for r in failing)
    for row in failing:
        kept = tmp_path / row.artifacts
        assert (kept / "history.jsonl").is_file() and (kept / "timeline.html").is_file()
        assert (kept / "cluster" / "logs" / "n1.log").is_file()
        assert not (kept / "cluster" / "n1").exists()  # data dropped, logs kept
        assert f"--seed {row.seed}" in (kept / "replay.sh").read_text()
    clean = [r for r in rows if r.scenario == "pause-primary"]
    assert clean and all(r.verdict == "ok" and not r.artifacts for r in clean)
    kept_dirs = {p.name for p in (tmp_path / "runs").iterdir()}
    assert len(kept_dirs) == len(failing)
    table = (tmp_path / "soak.md").read_text()
    assert "| scenario | seed |" in table and "lost-writes:1" in table
    assert "aborted: no loopback partition here" in table
    assert "<table>" in (tmp_path / "soak.html").read_text()
    assert all(c.duration_s == 10.0 for c in calls)


async def test_the_same_soak_seed_replays_the_same_runs(tmp_path: Path) -> None:
    def order(out: Path) -> list[tuple[str, int]]:
        return [(c.scenario.name, c.seed) for c in calls_by_out[out]]

    calls_by_out: dict[Path, list[RunOptions]] = {}
    for sub in ("a", "b"):
        out = tmp_path / sub
        calls_by_out[out] = []
        ticks = itertools.count(0, 30)
        await soak(SoakOptions(0.3, out, ["kill-minority", "pause-primary"], seed=9,
                               run_s=5.0),
                   run=_fake_runner(calls_by_out[out]), clock=lambda t=ticks: float(next(t)))
    assert order(tmp_path / "a") == order(tmp_path / "b")


def test_default_scenarios_leave_out_the_negative_controls() -> None:
    names = default_scenarios()
    assert "smoke" in names and "switchover" in names
    assert not [n for n in names if n.startswith("control-") or n == "clock-beyond-bound"]
