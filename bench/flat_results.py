"""Printing a flat benchmark result (name -> figure) as a table and then as one JSON line.

Shared by the small single-measurement benchmarks (snapshot load, WAL replay), which
otherwise each formatted the same two outputs by hand.
"""

from __future__ import annotations

import json
from typing import Any


def print_flat_results(results: dict[str, Any]) -> None:
    """One aligned ``name  value`` row per figure, then the whole dict as JSON."""
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(results))
