"""The watch checker finds each kind of anomaly and passes a clean delivery."""

from __future__ import annotations

from shardkv.chaos.checkers.watch_events import (
    ReceivedEvent,
    WatchedWrite,
    check_watch_events,
)

WRITES = [WatchedWrite(b"a", b"1", "s1", 5), WatchedWrite(b"a", b"2", "s1", 7),
          WatchedWrite(b"b", None, "s2", 3), WatchedWrite(b"c", b"x", "s2", None)]
CLEAN = [ReceivedEvent(b"a", b"1", 5, "s1", "put"), ReceivedEvent(b"b", None, 3, "s2", "delete"),
         ReceivedEvent(b"a", b"2", 7, "s1", "put")]


def kinds(events: list[ReceivedEvent]) -> list[str]:
    return sorted(a["kind"] for a in check_watch_events(WRITES, events).anomalies)


def test_a_clean_delivery_passes_and_unknown_outcomes_may_appear() -> None:
    result = check_watch_events(WRITES, CLEAN)
    assert result.verdict == "ok" and result.stats["acknowledged"] == 3
    with_unknown = [*CLEAN, ReceivedEvent(b"c", b"x", 4, "s2", "put")]
    result = check_watch_events(WRITES, with_unknown)
    assert result.verdict == "ok" and result.stats["unknown_outcome_delivered"] == 1


def test_each_anomaly() -> None:
    assert kinds(CLEAN[:2]) == ["missing"]
    assert kinds([*CLEAN, CLEAN[0]]) == ["duplicate", "order"]
    assert kinds([*CLEAN, ReceivedEvent(b"z", b"?", 9, "s1", "put")]) == ["phantom"]
    assert kinds([CLEAN[0], CLEAN[1], ReceivedEvent(b"a", b"bad", 7, "s1", "put")]) == [
        "mismatch"]
    assert kinds([CLEAN[2], CLEAN[1], CLEAN[0]]) == ["order"]
    # A write of unknown outcome may show once, not twice (a migration's copy of it).
    twice = [ReceivedEvent(b"c", b"x", 4, "s2", "put"), ReceivedEvent(b"c", b"x", 9, "s3", "put")]
    assert kinds([*CLEAN, *twice]) == ["duplicate"]


def test_a_write_is_named_by_key_and_version_whatever_shard_reports_it() -> None:
    # The workload guessed s1; a flip sent the write to s3, whose event names s3.
    moved = [WatchedWrite(b"a", b"1", "s1", 5), WatchedWrite(b"a", b"2", "s1", 2**32 + 9)]
    events = [ReceivedEvent(b"a", b"1", 5, "s1", "put"),
              ReceivedEvent(b"a", b"2", 2**32 + 9, "s3", "put")]
    assert check_watch_events(moved, events).verdict == "ok"
