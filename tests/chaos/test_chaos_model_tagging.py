"""Every operation is checked under the model its workload recorded, never a guessed one.

Regression for ``shardkv chaos run --scenario kill-primaries --seed 7 --duration 60s``: the
append workload rotated to a fresh key (``app-1-g25``) just before the run ended, so that key's
only operation was its final strong read, returning ``[]``. The report picked each key's model
from what was done to it, found no ``append`` on that key, checked it as a versioned register,
and called the run non-linearizable ("no linearization of these operations exists").
"""

from __future__ import annotations

import pytest
from shardkv.chaos.history import History
from shardkv.chaos.report import analyze, check_linearizable, models_of


def _seed7_shaped_history(*, with_models: bool) -> History:
    """A register key, an append key that saw appends, and a rotated append key that saw only
    its final read, as in the seed-7 run."""
    h = History(clock=iter(float(t) for t in range(1000)).__next__)
    reg = "versioned-register" if with_models else None
    app = "append" if with_models else None
    w = h.invoke(0, "write", "reg-0", "0-1", model=reg)
    h.complete(w, "ok", version=1)
    a = h.invoke(1, "append", "app-1-g24", "1-2", model=app)
    h.complete(a, "ok", version=2)
    for process, (key, model, seen, version) in enumerate([
        ("reg-0", reg, "0-1", 1),
        ("app-1-g24", app, ["1-2"], 2),
        ("app-1-g25", app, [], None),  # rotated in, never appended to: only the final read
    ], start=10):
        r = h.invoke(process, "read", key, consistency="strong", final=True, model=model)
        h.complete(r, "ok", seen, version=version)
    return h


def test_a_key_with_only_a_final_read_is_checked_under_its_workloads_model() -> None:
    history = _seed7_shaped_history(with_models=True)
    ops = history.operations()
    assert models_of(ops)["app-1-g25"] == "append"
    results = {r.model: r for r in check_linearizable(ops)}
    assert results["append"].verdict == "ok"
    assert results["append"].to_json()["keys_checked"] == 2
    assert results["versioned-register"].to_json()["keys_checked"] == 1
    report = analyze(history)
    assert report.verdict == "ok", report.summary()


def test_the_seed_7_false_alarm_came_from_inferring_the_model() -> None:
    """The same history without recorded models (as written before the fix) reproduces the
    false alarm: proof that the test above exercises the bug and not a lucky history."""
    ops = _seed7_shaped_history(with_models=False).operations()
    assert models_of(ops)["app-1-g25"] == "versioned-register"
    verdicts = {r.model: r.verdict for r in check_linearizable(ops)}
    assert verdicts["versioned-register"] == "illegal"


def test_one_key_under_two_models_is_refused() -> None:
    h = History(clock=iter(float(t) for t in range(100)).__next__)
    i = h.invoke(0, "incr", "k", 1, model="counter")
    h.complete(i, "ok", 1)
    r = h.invoke(1, "read", "k", consistency="strong", model="versioned-register")
    h.complete(r, "ok", "1", version=1)
    with pytest.raises(ValueError, match="one key, one specification"):
        models_of(h.operations())


def test_the_model_survives_the_jsonl_round_trip(tmp_path) -> None:
    from shardkv.chaos.history import load_history

    path = tmp_path / "history.jsonl"
    _seed7_shaped_history(with_models=True).dump(path)
    ops = load_history(path).operations()
    assert {op.key: op.model for op in ops}["app-1-g25"] == "append"
