"""The value every checker returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["ok", "anomaly", "unknown"]


@dataclass
class CheckResult:
    """``anomaly`` if any anomaly was found; ``unknown`` if the checker lacked what it needed
    (no final read of a key, an unreachable member); ``ok`` otherwise. ``anomalies`` are dicts
    with at least ``kind``, ``key`` and ``message``; ``stats`` are figures for the report."""

    name: str
    verdict: Verdict = "ok"
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    unknowns: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def anomaly(self, kind: str, key: Any, message: str, **detail: Any) -> None:
        self.anomalies.append({"kind": kind, "key": key, "message": message, **detail})
        self.verdict = "anomaly"

    def unknown(self, kind: str, key: Any, message: str, **detail: Any) -> None:
        self.unknowns.append({"kind": kind, "key": key, "message": message, **detail})
        if self.verdict == "ok":
            self.verdict = "unknown"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "anomalies": self.anomalies,
            "unknowns": self.unknowns,
            "stats": self.stats,
        }
