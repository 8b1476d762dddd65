"""Recording, pairing and the JSONL round trip of histories."""

from __future__ import annotations

import itertools
import math

import pytest
from shardkv.chaos.history import History, load_history


def fake_clock():
    ticks = itertools.count()
    return lambda: float(next(ticks))


def test_record_pair_and_round_trip(tmp_path):
    h = History(clock=fake_clock())
    a = h.invoke(0, "write", "k", b"\x00bin")
    b = h.invoke(1, "read", "k", consistency="eventual", max_staleness_ms=250)
    h.complete(a, "ok", version=7)
    c = h.invoke(2, "cas", "k", [7, "v2"])
    h.complete(b, "ok", b"\x00bin", version=7)
    h.complete(c, "fail", error="VERSION_MISMATCH")
    d = h.invoke(3, "incr", "n", 1)
    h.complete(d, "info", error="TIMEOUT")
    h.invoke(4, "read", "k", final=True)  # never completed: the run stopped
    h.record_nemesis("kill", "start", ["n1"], signal="SIGKILL")
    path = tmp_path / "history.jsonl"
    h.dump(path)

    loaded = load_history(path)
    assert [e.to_json() for e in loaded.events] == [e.to_json() for e in h.events]
    assert loaded.nemesis == h.nemesis
    ops = loaded.operations()
    assert [(o.f, o.type) for o in ops] == [
        ("write", "ok"), ("read", "ok"), ("cas", "fail"), ("incr", "info"), ("read", "info"),
    ]
    write, read, cas, incr, final = ops
    assert write.value == b"\x00bin" and write.version == 7
    assert (write.call, write.ret) == (0.0, 2.0)
    assert read.output == b"\x00bin" and read.consistency == "eventual"
    assert read.max_staleness_ms == 250
    assert cas.error == "VERSION_MISMATCH"
    assert incr.ret == math.inf and incr.latency is None
    assert final.final and final.ret == math.inf
    assert [o.id for o in ops] == list(range(5))
    # Indexes continue after loading, so a loaded history can be appended to.
    assert loaded.invoke(9, "read", "k") == max(e.index for e in h.events) + 1


def test_a_process_has_one_operation_in_flight():
    h = History(clock=fake_clock())
    h.invoke(0, "read", "k")
    h.invoke(0, "read", "k")
    with pytest.raises(ValueError, match="still in flight"):
        h.operations()


def test_bad_lines_name_the_file_and_line(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"kind":"op","index":0,"process":0,"type":"invoke","f":"read","time":0}\n'
                    '{"kind":"op","type":"maybe"}\n')
    with pytest.raises(ValueError, match=r"h.jsonl:2"):
        load_history(path)


def test_completion_must_be_ok_fail_or_info():
    h = History(clock=fake_clock())
    i = h.invoke(0, "read", "k")
    with pytest.raises(ValueError):
        h.complete(i, "invoke")  # type: ignore[arg-type]
