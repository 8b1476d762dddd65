"""The linearizability checker: known-good and known-bad histories, and generated ones."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st
from shardkv.chaos.linearizability import check_history, check_operations
from shardkv.chaos.models import MODELS
from shardkv.chaos.synthetic import linearizable_history, op

VREG = MODELS["versioned-register"]


def test_sequential_writes_and_reads_are_linearizable():
    ops = [
        op(0, "write", "a", 0, 1, version=3),
        op(1, "read", None, 2, 3, output="a", version=3),
        op(2, "cas", [3, "b"], 4, 5, version=7),
        op(3, "read", None, 6, 7, output="b", version=7),
    ]
    assert check_operations(ops, VREG).verdict == "ok"


def test_concurrent_read_may_see_either_value():
    ops = [
        op(0, "write", "a", 0, 1, version=1),
        op(1, "write", "b", 2, 6, version=2),
        op(2, "read", None, 3, 4, output="a", version=1),
        op(3, "read", None, 4.5, 5, output="b", version=2),
    ]
    assert check_operations(ops, VREG).verdict == "ok"


def test_stale_strong_read_is_illegal_and_window_names_it():
    ops = [
        op(0, "write", "a", 0, 1, version=1),
        op(1, "write", "b", 2, 3, version=2),
        op(2, "read", None, 4, 5, output="a", version=1),  # b was acknowledged before
    ]
    result = check_operations(ops, VREG, key="k")
    assert result.verdict == "illegal"
    assert result.window is not None
    assert result.window.stuck_on.id == 2
    assert [o.id for o in result.window.pending] == [2]
    assert [o.id for o in result.window.linearized_tail] == [0, 1]
    assert "no linearization" in result.window.describe()


def test_two_cas_from_the_same_version_cannot_both_succeed():
    ops = [
        op(0, "write", "a", 0, 1, version=5),
        op(1, "cas", [5, "b"], 2, 4, version=6),
        op(2, "cas", [5, "c"], 2.5, 4.5, version=8),
    ]
    result = check_operations(ops, VREG)
    assert result.verdict == "illegal"
    assert {o.id for o in result.window.pending} >= {1, 2}


def test_versions_must_grow_along_real_time():
    ops = [op(0, "write", "a", 0, 1, version=9), op(1, "write", "b", 2, 3, version=4)]
    assert check_operations(ops, VREG).verdict == "illegal"


def test_info_write_may_take_effect_later_or_never():
    took_effect = [
        op(0, "write", "a", 0, 1, version=1),
        op(1, "write", "x", 1.5, type="info"),
        op(2, "read", None, 5, 6, output="a", version=1),
        op(3, "read", None, 7, 8, output="x", version=4),
    ]
    never = [
        op(0, "write", "a", 0, 1, version=1),
        op(1, "write", "x", 1.5, type="info"),
        op(2, "read", None, 5, 6, output="a", version=1),
    ]
    assert check_operations(took_effect, VREG).verdict == "ok"
    assert check_operations(never, VREG).verdict == "ok"


def test_info_write_cannot_be_seen_before_it_was_invoked():
    ops = [
        op(0, "write", "a", 0, 1, version=1),
        op(1, "read", None, 2, 3, output="x", version=4),
        op(2, "write", "x", 5, type="info"),
    ]
    assert check_operations(ops, VREG).verdict == "illegal"


def test_fail_operations_never_happened():
    ops = [
        op(0, "write", "a", 0, 1, version=1),
        op(1, "cas", [7, "b"], 2, 3, type="fail", error="VERSION_MISMATCH"),
        op(2, "read", None, 4, 5, output="a", version=1),
    ]
    assert check_operations(ops, VREG).verdict == "ok"


def test_counter_doubled_increment_is_illegal_and_info_increment_is_not():
    doubled = [
        op(0, "incr", 1, 0, 1, output=1),
        op(1, "incr", 1, 2, 3, output=3),  # the counter jumped by two
    ]
    with_info = [
        op(0, "incr", 1, 0, 1, output=1),
        op(1, "incr", 1, 0.5, type="info"),
        op(2, "incr", 1, 2, 3, output=3),
    ]
    assert check_operations(doubled, MODELS["counter"]).verdict == "illegal"
    assert check_operations(with_info, MODELS["counter"]).verdict == "ok"


def test_append_and_set_models():
    good = [
        op(0, "append", 1, 0, 1, version=1),
        op(1, "append", 2, 0, 1, version=2),
        op(2, "read", None, 2, 3, output=[1, 2]),
    ]
    reordered = [*good[:2], op(2, "read", None, 2, 3, output=[2, 1])]
    assert check_operations(good, MODELS["append"]).verdict == "ok"
    assert check_operations(reordered, MODELS["append"]).verdict == "illegal"
    lost = [op(0, "add", 1, 0, 1), op(1, "read", None, 2, 3, output=[])]
    assert check_operations(lost, MODELS["set"]).verdict == "illegal"


def test_keys_are_checked_independently():
    ops = [
        op(0, "write", "a", 0, 1, version=1, key="x"),
        op(1, "write", "b", 0, 1, version=2, key="y"),
        op(2, "read", None, 2, 3, output="a", version=1, key="x"),
        op(3, "read", None, 2, 3, output="a", version=1, key="y"),
    ]
    result = check_history(ops, VREG)
    assert result.verdict == "illegal"
    assert result.keys["x"].verdict == "ok"
    assert result.keys["y"].verdict == "illegal"


def test_time_budget_gives_unknown():
    ops = linearizable_history("append", 7, n_ops=60, max_width=30, info_rate=0.0)
    assert check_history(ops, MODELS["append"], time_budget_s=0.0).verdict == "unknown"


def test_ten_thousand_operations_over_thirty_keys_check_quickly():
    ops = []
    for k in range(30):
        ops += linearizable_history("versioned-register", k, n_ops=340, key=f"k{k}")
    started = time.monotonic()
    result = check_history(ops, VREG, time_budget_s=60)
    assert result.verdict == "ok"
    assert len(ops) == 10_200
    # Not a timing assertion on the result: the budget above is what bounds it.
    assert sum(r.operations for r in result.keys.values()) <= len(ops)
    assert time.monotonic() - started < 60


KINDS = ["register", "versioned-register", "append", "set", "counter"]


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**32),
    n_ops=st.integers(1, 30),
    width=st.floats(0.0, 3.0),
    info_rate=st.floats(0.0, 0.3),
)
def test_histories_from_a_sequential_execution_are_always_accepted(
    kind, seed, n_ops, width, info_rate
):
    ops = linearizable_history(kind, seed, n_ops=n_ops, max_width=width, info_rate=info_rate)
    result = check_history(ops, MODELS[kind], time_budget_s=None)
    assert result.verdict == "ok", [o.describe() for o in ops]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_ops=st.integers(4, 25))
def test_corrupting_a_read_of_a_sequential_history_is_caught(seed, n_ops):
    """Change one strong read that observed a value to a value nobody wrote: always illegal."""
    ops = linearizable_history("versioned-register", seed, n_ops=n_ops, max_width=1.0)
    reads = [o for o in ops if o.f == "read" and o.type == "ok" and o.output is not None]
    if not reads:
        return
    target = reads[seed % len(reads)]
    bad = [
        op(o.id, o.f, o.value, o.call, o.ret, output="never-written", version=o.version)
        if o is target else o
        for o in ops
    ]
    assert check_history(bad, VREG, time_budget_s=None).verdict == "illegal"
