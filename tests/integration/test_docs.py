"""Every code block in README.md and docs/ runs, so the docs stay true.

Blocks are taken in file order. A ``sh``/``bash`` block runs in bash with ``-euo pipefail``
(a failing command fails the test), a ``python`` block in the project's interpreter; all
blocks of one file share a scratch working directory, as a reader's terminal would, with
``shardkv`` on the PATH. A Python block talks to the cluster in that directory
(``./.shardkv``, what ``shardkv up`` writes): if none is running there, one is started
first, and whatever runs there is stopped at the end. A block that cannot run here (it needs
Docker, Kubernetes, or is a drawing) is marked on the line above its fence with
``<!-- doc-test: not run: REASON -->``; an unmarked block without a runnable language fails
the test, so nothing escapes by accident.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL, PYTHON = ("sh", "bash", "shell"), ("python", "py")
NOT_RUN = re.compile(r"<!--\s*doc-test:\s*not run:\s*(?P<reason>\S.*?)\s*-->")
BLOCK_TIMEOUT_S = 240


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the marker on the line above each."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        start, ticks = i, fence.group(1)
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(ticks):
            body.append(lines[i])
            i += 1
        marker = NOT_RUN.search(lines[start - 1]) if start > 0 else None
        blocks.append(Block(path, start + 1, fence.group(2).lower(), "\n".join(body) + "\n",
                            marker.group("reason") if marker else None))
        i += 1
    return blocks


def test_every_block_runs_or_says_why_not() -> None:
    unmarked = [b.where for path in DOCS for b in code_blocks(path)
                if b.not_run is None and b.language not in SHELL + PYTHON]
    assert not unmarked, (f"blocks that neither run nor say why not (tag them sh/python, or "
                          f"mark them `<!-- doc-test: not run: REASON -->`): {unmarked}")
    assert any(b.language in SHELL for b in code_blocks(ROOT / "README.md"))
    assert any(b.language in PYTHON for b in code_blocks(ROOT / "README.md"))


def _run(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if block.language in SHELL:
        argv = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        argv = [sys.executable, "-c", block.code]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def _shardkv(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)


# Files whose blocks are all marked (drawings, Kubernetes) have nothing to run here.
def runnable_blocks(path: Path) -> list[Block]:
    return [b for b in code_blocks(path)
            if b.not_run is None and b.language in SHELL + PYTHON]


WITH_RUNNABLE = [p for p in DOCS if runnable_blocks(p)]


@pytest.mark.parametrize("path", WITH_RUNNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_blocks_of(path: Path, tmp_path: Path) -> None:
    runnable = runnable_blocks(path)
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDKV_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    try:
        for block in runnable:
            if block.language in PYTHON and not (tmp_path / ".shardkv" / "cluster.json").exists():
                up = _shardkv(tmp_path, env, "up", "--detach", "--fsync", "never")
                assert up.returncode == 0, f"cluster for {block.where}: {up.stderr}"
            done = _run(block, tmp_path, env)
            assert done.returncode == 0, (f"{block.where} failed ({done.returncode}):\n"
                                          f"{block.code}\n--- stdout\n{done.stdout}\n"
                                          f"--- stderr\n{done.stderr}")
    finally:
        _shardkv(tmp_path, env, "down")
