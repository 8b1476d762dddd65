"""Optional sampling profiles of the shardkv node while a cell runs (``--profile DIR``).

py-spy attaches to the running node from outside (no code change, no restart) and writes a
flame graph per cell, so a figure in the table comes with the evidence of where the node's
time went. py-spy is not a dependency of shardkv: install it into the virtualenv to use this
(``.venv/bin/pip install py-spy``); without it the benchmark says so and runs unprofiled.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def py_spy_binary() -> str | None:
    """py-spy beside the running Python (the virtualenv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def profiled(pid: int, output: Path, seconds: float, *, rate: int = 100,
             fmt: str = "flamegraph", native: bool = False) -> Iterator[list[str]]:
    """Sample ``pid`` for ``seconds`` (rounded up: py-spy counts whole seconds) into the flame
    graph ``output`` (SVG) while the body runs. ``--nonblocking`` keeps the node running
    between samples, so the profile disturbs the figures as little as possible.

    Yields a list that holds, after the block, what went wrong with the profile (if anything):
    a failed profile never invalidates the measurement it accompanied."""
    binary = py_spy_binary()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (.venv/bin/pip install py-spy)")
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        binary, "record", "--pid", str(pid), "--duration", str(max(1, math.ceil(seconds))),
        "--rate", str(rate), "--threads", "--format", fmt, "--output", str(output),
        # C frames need the process paused while sampled (py-spy refuses --nonblocking)
        *(["--native"] if native else ["--nonblocking"]),
    ]  # fmt: skip
    problems: list[str] = []
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield problems
    finally:
        try:
            _, err = spy.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if spy.returncode != 0:
            message = err.decode("utf-8", "replace").strip()[-300:]
            problems.append(f"py-spy failed ({spy.returncode}) for {output.name}: {message}")
