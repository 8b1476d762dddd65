"""The watch filter and request checks: which keys a watch sees, what an entry becomes, and
which requests are refused (INVALID_ARGUMENT)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shardkv.cluster.errors import InvalidArgument
from shardkv.node.storage.compression import encode_value
from shardkv.node.storage.sessions import SESSION_PREFIX
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.watch.watch_filter import WatchFilter, entry_events
from shardkv.node.watch.watch_request import WatchRequest


def test_key_prefix_and_range() -> None:
    key = WatchFilter.parse(key="a")
    assert key.matches(b"a") and not key.matches(b"a\x00") and not key.matches(b"ab")
    prefix = WatchFilter.parse(prefix="ab")
    assert prefix.matches(b"ab") and prefix.matches(b"abz") and not prefix.matches(b"ac")
    assert not prefix.matches(b"aa")
    ranged = WatchFilter.parse(start="b", end="d")
    assert ranged.matches(b"b") and ranged.matches(b"cz") and not ranged.matches(b"d")
    unbounded = WatchFilter.parse(start="m")
    assert unbounded.matches(b"\xff" * 8) and not unbounded.matches(b"l")
    assert WatchFilter.parse(prefix=b"\xff\xff").end is None


@given(st.binary(min_size=1, max_size=8), st.binary(max_size=12))
def test_prefix_matches_exactly_the_keys_that_start_with_it(prefix: bytes, key: bytes) -> None:
    if prefix.startswith(b"\x00shardkv:"):
        return
    watch = WatchFilter.parse(prefix=prefix)
    reserved = key.startswith(b"\x00shardkv:")
    assert watch.matches(key) == (key.startswith(prefix) and not reserved)


def test_reserved_keys_never_match_even_the_whole_key_space() -> None:
    everything = WatchFilter.parse(prefix=b"")
    assert everything.matches(b"user:1")
    assert not everything.matches(SESSION_PREFIX + b"client-1")
    assert not WatchFilter.parse(start=b"\x00").matches(SESSION_PREFIX + b"x")


@pytest.mark.parametrize("options", [
    {}, {"key": "a", "prefix": "b"}, {"end": "z"}, {"start": "b", "end": "a"},
    {"start": "a", "end": "a"}, {"key": ""}, {"key": 5}, {"prefix": SESSION_PREFIX},
    {"key": b"x" * 2000},
])
def test_bad_filters(options: dict) -> None:
    with pytest.raises(InvalidArgument):
        WatchFilter.parse(**options)


@pytest.mark.parametrize("raw", [
    None, [], {"prefix": "p", "start_version": -1}, {"prefix": "p", "start_version": "3"},
    {"prefix": "p", "start_version": True}, {"prefix": "p", "values": "yes"},
    {"prefix": "p", "progress_interval_ms": 10}, {"prefix": "p", "progress_interval_ms": 1.5},
    {"prefix": "p", "nope": 1},
])
def test_bad_requests(raw: object) -> None:
    with pytest.raises(InvalidArgument):
        WatchRequest.parse(raw)


def test_a_good_request() -> None:
    request = WatchRequest.parse({"prefix": "p", "start_version": 7, "values": False,
                                  "progress_interval_ms": 250})
    assert (request.start_version, request.values, request.progress_interval_s) == (7, False,
                                                                                    0.25)
    assert not request.eventual  # no query: a strong watch, served by the primary only


@pytest.mark.parametrize("query", [
    {"consistency": "bogus"}, {"max_staleness_ms": "5"},
    {"consistency": "strong", "max_staleness_ms": "5"},
    {"consistency": "eventual", "max_staleness_ms": "-1"},
    {"consistency": "eventual", "max_staleness_ms": "nan"},
    {"consistency": "eventual", "max_staleness_ms": "inf"},
    {"consistency": "eventual", "max_staleness_ms": "soon"}, {"other": "1"},
])
def test_bad_read_options(query: dict) -> None:
    with pytest.raises(InvalidArgument):
        WatchRequest.parse({"prefix": "p"}, query)


def test_eventual_read_options() -> None:
    bounded = WatchRequest.parse({"prefix": "p"}, {"consistency": "eventual",
                                                  "max_staleness_ms": "250"})
    assert (bounded.eventual, bounded.max_staleness_ms) == (True, 250.0)
    unbounded = WatchRequest.parse({"prefix": "p"}, {"consistency": "eventual"})
    assert (unbounded.eventual, unbounded.max_staleness_ms) == (True, None)


def test_entry_events_types_values_and_reserved_rows() -> None:
    stored, compressed = encode_value(b"v" * 4096, 64)
    assert compressed
    entry = WalEntry(9, 1, (
        Mutation(MutationKind.PUT, b"p:1", stored, compressed, 1234.5),
        Mutation(MutationKind.DELETE, b"p:2"),
        Mutation(MutationKind.DELETE, b"p:3", expired=True),
        Mutation(MutationKind.PUT, SESSION_PREFIX + b"c1", b"row"),
        Mutation(MutationKind.PUT, b"q:1", b"other"),
    ))
    watch = WatchFilter.parse(prefix="p:")
    events = entry_events(entry, watch, "s1", values=True)
    assert events == [
        {"type": "put", "key": b"p:1", "value": b"v" * 4096, "version": 9, "shard": "s1",
         "expires_at": 1234.5, "prev_version": None},
        {"type": "delete", "key": b"p:2", "version": 9, "shard": "s1", "prev_version": None},
        {"type": "expire", "key": b"p:3", "version": 9, "shard": "s1", "prev_version": None},
    ]
    assert "value" not in entry_events(entry, watch, "s1", values=False)[0]
    assert entry_events(WalEntry(10, 1, ()), watch, "s1", values=True) == []


def test_the_expired_mark_survives_the_wire_and_old_records_read_unchanged() -> None:
    marked = Mutation(MutationKind.DELETE, b"k", expired=True)
    assert Mutation.from_wire(marked.to_wire()) == marked
    plain = Mutation(MutationKind.DELETE, b"k")
    assert len(plain.to_wire()) == 5
    assert Mutation.from_wire(plain.to_wire()) == plain
