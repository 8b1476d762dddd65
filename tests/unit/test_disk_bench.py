"""The disk benchmark's arithmetic and drawing, on runs built by hand (no cluster)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a folder of the repository, not a package
    sys.path.insert(0, str(REPO))

from bench.disk_bench import svg, table  # noqa: E402
from bench.disk_workload import OverwriteSpec, tree_bytes  # noqa: E402

MiB = 1 << 20


def _run(label: str, sizes: list[int]) -> dict:
    samples = [{"t": float(i), "n1": size, "n2": size // 2} for i, size in enumerate(sizes)]
    return {"label": label, "engine": "memory", "workload": {"seconds": 3.0},
            "puts_per_s": 1234.5, "written_bytes": 50 * MiB, "live_bytes": 4 * MiB,
            "peak_bytes": {"n1": max(sizes), "n2": max(sizes) // 2},
            "final_bytes": {"n1": sizes[-1], "n2": sizes[-1] // 2}, "samples": samples}


def test_table_shows_peak_and_final_of_the_largest_member() -> None:
    text = table([_run("before", [0, 10 * MiB, 30 * MiB]), _run("after", [0, 8 * MiB, 5 * MiB])])
    lines = text.splitlines()
    assert lines[0].split()[0] == "label" and len(lines) == 3
    assert lines[1].split()[-2:] == ["30.0", "30.0"]
    assert lines[2].split()[-2:] == ["8.0", "5.0"]
    assert "1234" in lines[1]


def test_svg_is_a_document_with_one_line_per_run() -> None:
    document = svg([_run("before", [0, MiB, 3 * MiB]), _run("after", [0, MiB, MiB])], "t")
    root = ET.fromstring(document)
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(lines) == 2
    assert all(len(line.get("points", "").split()) == 3 for line in lines)


def test_tree_bytes_and_live_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 100)
    (tmp_path / "g").write_bytes(b"y" * 23)
    assert tree_bytes(tmp_path) == 123
    assert tree_bytes(tmp_path / "missing") == 0
    assert OverwriteSpec().live_bytes == 20_000 * 209
