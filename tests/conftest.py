"""Suite-wide settings.

Hypothesis: in CI (``CI`` set) examples are derandomized, so a run is reproducible and a
failure there is a failure everywhere; on a developer's machine they stay random, to keep
finding new cases. ``SHARDKV_HYPOTHESIS_PROFILE`` picks a profile explicitly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(
    os.environ.get("SHARDKV_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


# -- skips: decided by capability, reported, and in CI allowed only for listed reasons -------
#
# A test that cannot run here skips with a reason that names the missing capability (a
# binary, a reachable Docker engine, root). In CI (``CI`` set) a skip whose reason matches no
# pattern in ``tests/allowed_skips.txt`` fails the run: a test that should run on the CI
# machine must not disappear silently. ``SHARDKV_TEST_QUICK=1`` (``scripts/test --quick``)
# skips the container and chaos tiers on purpose.

QUICK = os.environ.get("SHARDKV_TEST_QUICK") == "1"
QUICK_REASON = "quick mode (SHARDKV_TEST_QUICK=1): container and chaos tiers not run"
SLOW_TIERS = ("containers", "chaos")
ALLOWED_SKIPS_FILE = Path(__file__).with_name("allowed_skips.txt")


def allowed_skip_patterns() -> list[re.Pattern[str]]:
    lines = ALLOWED_SKIPS_FILE.read_text(encoding="utf-8").splitlines()
    return [re.compile(line) for line in lines if line.strip() and not line.startswith("#")]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not QUICK:
        return
    tests_dir = Path(__file__).parent
    skip = pytest.mark.skip(reason=QUICK_REASON)
    for item in items:
        tier = item.path.relative_to(tests_dir).parts[0] if item.path.is_relative_to(
            tests_dir) else ""
        if tier in SLOW_TIERS:
            item.add_marker(skip)


_SKIPS: list[tuple[str, str]] = []  # (test id, reason)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        _SKIPS.append((report.nodeid, reason))


def unexpected_skips() -> list[tuple[str, str]]:
    patterns = allowed_skip_patterns()
    return [(test, reason) for test, reason in _SKIPS
            if not any(p.search(reason) for p in patterns)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and unexpected_skips() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _SKIPS:
        return
    by_reason: dict[str, int] = {}
    for _, reason in _SKIPS:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    terminalreporter.section("skips by reason")
    for reason, count in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{count:5d}  {reason}")
    unexpected = unexpected_skips()
    if unexpected:
        where = "fails the run (CI is set)" if os.environ.get("CI") else "would fail in CI"
        terminalreporter.section(f"skips not in tests/allowed_skips.txt: {where}", red=True)
        for test, reason in unexpected:
            terminalreporter.write_line(f"{test}: {reason}")


@pytest.fixture(autouse=True, scope="module")
def _environment_restored_per_module() -> Any:
    """Whatever a test module puts into ``os.environ`` (the chaos harness run in-process sets
    the cluster credential for its containers, CLI commands called in-process point at a
    cluster's token file) is gone before the next module: every process a later test starts
    inherits the environment, and a stray credential makes an open test cluster a secured
    one. Module scope, so a module-scoped fixture's own settings live as long as it does."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)
