"""``shardkv chaos soak``: cycle every scenario with fresh seeds for hours; keep what failed.

A single run shows one seed of one scenario; bugs that need an unlucky interleaving show up
in the hundredth run, not the first. The soak runs scenario after scenario (each cycle in an
order shuffled from the soak's seed, each run with a fresh seed drawn from it: the soak's seed
replays the whole soak), each for ``run_s`` seconds of faults, until ``hours`` is spent.

What it keeps: for a run that failed (an anomaly, an unknown), its directory: ``history.jsonl``,
``report.json``, ``summary.txt``, ``timeline.html``, ``schedule.json``, the processes' logs
(``cluster/logs``; data directories are removed) and ``replay.sh``, the command that replays
it. A clean run leaves only its row. After every run, ``DIR/soak.md``, ``DIR/soak.html`` and
``DIR/soak.json`` are rewritten, so an interrupted soak still has its table.

Negative controls (``control-*``, ``clock-beyond-bound``) are left out unless named: they fail
on purpose. A scenario that cannot run on this machine (RunAborted: no root for partitions)
gets one ``aborted`` row with the reason and is not tried again.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardkv.chaos.history import load_history
from shardkv.chaos.runner import RunAborted, RunOptions, run_scenario
from shardkv.chaos.scenarios import SCENARIOS, Scenario
from shardkv.chaos.soak_table import SoakRow, html_page, markdown

log = logging.getLogger(__name__)

OVERHEAD_S = 25.0  # start, settle, final reads, checks: what a run costs besides its faults


def default_scenarios() -> list[str]:
    """Every scenario except the negative controls (they fail on purpose)."""
    return [name for name, s in SCENARIOS.items()
            if s.negative_control is None and name != "clock-beyond-bound"]


@dataclass
class SoakOptions:
    hours: float
    out: Path
    scenarios: Sequence[str]
    seed: int
    run_s: float = 60.0


def replay_command(scenario: Scenario, seed: int, run_s: float, out: Path) -> str:
    return (f"shardkv chaos run --scenario {scenario.name} --seed {seed} --duration {run_s:g}s "
            f"--topology {scenario.shape.topology} --schedule {out / 'schedule.json'} "
            f"--out /tmp/replay-{scenario.name}-{seed}")


def _keep_failing(run_dir: Path, scenario: Scenario, seed: int, run_s: float) -> None:
    cluster = run_dir / "cluster"
    if cluster.is_dir():  # keep the logs, drop the data directories
        for child in cluster.iterdir():
            if child.name == "logs":
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()
    (run_dir / "replay.sh").write_text(
        "#!/bin/sh\n# replays this failing soak run (same seed, same schedule)\n"
        + replay_command(scenario, seed, run_s, run_dir) + "\n")


def _faults_started(run_dir: Path) -> int:
    try:
        history = load_history(run_dir / "history.jsonl")
    except (OSError, ValueError):
        return 0
    return sum(1 for e in history.nemesis if e.action == "start")


Runner = Callable[[RunOptions], Coroutine[Any, Any, Any]]


async def soak(opts: SoakOptions, *, run: Runner = run_scenario,
               clock: Callable[[], float] = time.monotonic) -> list[SoakRow]:
    """Run the soak; returns its rows (also written to ``opts.out``)."""
    unknown = sorted(set(opts.scenarios) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; `shardkv chaos list` shows them")
    if not opts.scenarios:
        raise ValueError("no scenario to soak")
    opts.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(opts.seed)
    ends = clock() + opts.hours * 3600
    rows: list[SoakRow] = []
    runnable = list(opts.scenarios)
    title = (f"shardkv chaos soak: seed {opts.seed}, {opts.hours:g} h, "
             f"{opts.run_s:g} s of faults per run")
    number = 0
    while runnable and clock() + opts.run_s + OVERHEAD_S <= ends:
        cycle = list(runnable)
        rng.shuffle(cycle)
        for name in cycle:
            if clock() + opts.run_s + OVERHEAD_S > ends:
                break
            number += 1
            scenario = SCENARIOS[name]
            seed = rng.randrange(1, 2**31)
            run_dir = opts.out / "runs" / f"{number:04d}-{name}-{seed}"
            started = clock()
            try:
                report = await run(RunOptions(scenario, seed, run_dir, duration_s=opts.run_s))
            except RunAborted as exc:
                runnable.remove(name)
                rows.append(SoakRow(name, seed, "aborted", reason=str(exc)))
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                row = SoakRow.from_report(name, seed, report, _faults_started(run_dir),
                                          clock() - started)
                if report.exit_status == 0:
                    shutil.rmtree(run_dir, ignore_errors=True)
                else:
                    _keep_failing(run_dir, scenario, seed, opts.run_s)
                    row.artifacts = str(run_dir.relative_to(opts.out))
                rows.append(row)
            log.info("soak run %d %s seed %d: %s", number, name, seed, rows[-1].verdict)
            write_tables(rows, opts.out, title)
    write_tables(rows, opts.out, title)
    return rows


def write_tables(rows: Sequence[SoakRow], out: Path, title: str) -> None:
    (out / "soak.md").write_text(markdown(rows, title))
    (out / "soak.html").write_text(html_page(rows, title), encoding="utf-8")
    (out / "soak.json").write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
