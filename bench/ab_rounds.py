"""Alternated A/B rounds of a per-process CPU figure, and their medians and ratio.

The in-process micro-benchmarks (``replica_apply_bench``, ``replica_stream_bench``) run each
round in fresh processes of a side's interpreter; sides alternate round by round (A B, B A,
...) so a machine that gets busier over the run moves both alike.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable


def alternate(sides: dict[str, str], rounds: int, run: Callable[[str], float],
              describe: Callable[[float], str]) -> dict[str, list[float]]:
    """``run(python)`` for each side per round, alternating their order; one line each."""
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name in order:
            figures[name].append(run(sides[name]))
            print(f"round {index + 1} {name}: {describe(figures[name][-1])} "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return figures


def report(figures: dict[str, list[float]], unit: str) -> None:
    """Median (range) per side, and the median A/B ratio of the rounds when there is a B."""
    for name, values in figures.items():
        print(f"{name}: {statistics.median(values):.1f} {unit} "
              f"({min(values):.1f}..{max(values):.1f})")
    if "B" in figures:
        ratios = [a / b for a, b in zip(figures["A"], figures["B"], strict=True)]
        print(f"A/B: {statistics.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f})")
