"""Unit tests for what the negative controls changed: the switches' arming rules, the exact
counter check, and the lost-writes rule for a forgotten write whose version came back."""

from __future__ import annotations

import pytest
from shardkv.chaos.checkers.counters import check_counters
from shardkv.chaos.checkers.lost_writes import check_lost_writes
from shardkv.chaos.history import History
from shardkv.node.testing import negative_controls


def test_switches_need_test_admin_and_known_names() -> None:
    assert negative_controls.parse("double-apply-incr", test_admin=False) == frozenset()
    assert negative_controls.parse(" double-apply-incr ,skip-staleness-check",
                                   test_admin=True) == {"double-apply-incr",
                                                        "skip-staleness-check"}
    assert negative_controls.parse("", test_admin=True) == frozenset()
    with pytest.raises(ValueError, match="unknown negative control"):
        negative_controls.parse("ack-befor-wal-write", test_admin=True)


def test_switches_are_off_in_this_process() -> None:
    assert negative_controls.ENABLED == frozenset()
    assert negative_controls.incr_delta(3) == 3


def _clock() -> object:
    return iter(float(t) for t in range(1000)).__next__


def _counter_history(final: int, *, info_deltas: tuple[int, ...] = ()) -> History:
    h = History(clock=_clock())
    for p, delta in enumerate((2, 3, 5)):
        i = h.invoke(p, "incr", "c", delta, model="counter")
        h.complete(i, "ok", None)
    for p, delta in enumerate(info_deltas, start=10):
        i = h.invoke(p, "incr", "c", delta, model="counter")
        h.complete(i, "info", error="TIMEOUT")
    r = h.invoke(99, "read", "c", consistency="strong", final=True, model="counter")
    h.complete(r, "ok", final)
    return h


@pytest.mark.parametrize(("final", "infos", "verdict"), [
    (10, (), "ok"),
    (11, (), "anomaly"),  # no unknown increment: exactly the acknowledged sum
    (9, (), "anomaly"),
    (10, (4, 7), "ok"), (14, (4, 7), "ok"), (17, (4, 7), "ok"), (21, (4, 7), "ok"),
    (12, (4, 7), "anomaly"),  # inside [10, 21] but no subset of {4, 7} adds up to 2
    (22, (4, 7), "anomaly"),
])
def test_counter_check_is_exact(final: int, infos: tuple[int, ...], verdict: str) -> None:
    result = check_counters(_counter_history(final, info_deltas=infos).operations())
    assert result.verdict == verdict, result.anomalies


def test_a_forgotten_write_is_lost_even_when_the_final_version_is_higher() -> None:
    """The node acknowledged v=9, crashed, lost it, and handed v=5.. out again: the final
    version (11) is above every acknowledged one, which the final-read rule alone accepts."""
    h = History(clock=_clock())
    w = h.invoke(0, "write", "k", "a", model="versioned-register")
    h.complete(w, "ok", version=9)
    for p, (value, version) in enumerate((("b", 5), ("c", 11)), start=1):
        w = h.invoke(p, "write", "k", value, model="versioned-register")
        h.complete(w, "ok", version=version)
    r = h.invoke(9, "read", "k", consistency="strong", final=True, model="versioned-register")
    h.complete(r, "ok", "c", version=11)
    result = check_lost_writes(h.operations())
    assert result.verdict == "anomaly"
    assert "had forgotten the first" in result.anomalies[0]["message"]


def test_concurrent_writes_may_take_versions_in_any_order() -> None:
    h = History(clock=_clock())
    a = h.invoke(0, "write", "k", "a", model="versioned-register")
    b = h.invoke(1, "write", "k", "b", model="versioned-register")
    h.complete(a, "ok", version=8)  # a acknowledged after b began: no order between them
    h.complete(b, "ok", version=7)
    r = h.invoke(9, "read", "k", consistency="strong", final=True, model="versioned-register")
    h.complete(r, "ok", "a", version=8)
    assert check_lost_writes(h.operations()).verdict == "ok"
